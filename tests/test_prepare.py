"""Parsing and deciding a backlog ahead in a forked worker: the same decisions, and nothing depends on it."""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from omo_mailbot.errors import TransientMailboxError
from omo_mailbot.mail import ParsedMail
from omo_mailbot.mailbox import FetchedMail
from omo_mailbot.models import Message, Verdict
from omo_mailbot.prepare import BATCH_BYTES, MAIL_BYTES, Balance, Prepared, Preparer, _wanted, prepare
from omo_mailbot.service import build_decider, build_service
from omo_mailbot.verdict import Decider, Decision

from . import mails


def _fetched(raws: list[bytes], first_uid: int = 1) -> list[FetchedMail]:
    return [FetchedMail(uid=first_uid + i, raw=raw, size=len(raw)) for i, raw in enumerate(raws)]


def _batches(raws: list[bytes], size: int) -> Iterator[list[FetchedMail]]:
    fetched = _fetched(raws)
    return iter([fetched[i : i + size] for i in range(0, len(fetched), size)])


def _mixed(n: int) -> list[bytes]:
    return [mails.acute() if i % 3 == 0 else mails.preparation() for i in range(n)]


@pytest.fixture
def decider(make_config) -> Decider:
    return build_decider(make_config())


def _same_decision(ahead: Prepared, decider: Decider, raw: bytes) -> None:
    here = prepare(decider, raw)
    assert here is not None
    assert ahead.decision.label == here.decision.label
    assert ahead.decision.score == pytest.approx(here.decision.score)
    assert ahead.decision.rule_symbols == here.decision.rule_symbols
    assert ahead.decision.rules_hash == here.decision.rules_hash
    assert ahead.mail.message_id == here.mail.message_id


def test_the_worker_decides_every_mail_as_the_service_would(decider: Decider) -> None:
    raws = _mixed(7)
    with Preparer(decider, share=False) as preparer:
        assert preparer.pid is not None and preparer.pid != os.getpid()
        seen = list(preparer.ahead(_batches(raws, 3)))
    assert [len(batch) for batch, _ in seen] == [3, 3, 1]
    answers = [a for _, batch_answers in seen for a in batch_answers]
    assert all(isinstance(a, Prepared) for a in answers)
    for ahead, raw in zip(answers, raws, strict=True):
        assert ahead is not None
        _same_decision(ahead, decider, raw)
    assert preparer.broken is None
    assert {a.decision.label for a in answers if a} == {"acute", "preparation"}


def test_what_the_worker_cannot_read_is_left_to_the_service(decider: Decider) -> None:
    batch = [
        FetchedMail(uid=1, raw=mails.acute(), size=1),
        FetchedMail(uid=2, raw=b"", size=0),  # an empty body: the service stores it as an error case
        FetchedMail(uid=3, raw=b"Subject: x\r\n\r\nbody", size=10**9, too_large=True),
        FetchedMail(uid=4, raw=b"\x00\x01 not a mail at all", size=20),
    ]
    with Preparer(decider, share=False) as preparer:
        [(_, answers)] = list(preparer.ahead(iter([batch])))
    assert isinstance(answers[0], Prepared)
    assert answers[1] is None and answers[2] is None
    assert answers[3] is None or isinstance(answers[3].mail, ParsedMail)  # whatever parse makes of it, as in-process


def test_a_worker_that_dies_leaves_the_rest_of_the_pass_to_the_service(decider: Decider) -> None:
    raws = _mixed(9)
    with Preparer(decider, share=False) as preparer:
        stream = preparer.ahead(_batches(raws, 3))
        _, first = next(stream)
        assert all(a is not None for a in first)
        assert preparer.pid is not None
        os.kill(preparer.pid, signal.SIGKILL)
        rest = list(stream)
    assert [len(b) for b, _ in rest] == [3, 3]
    # the batch already in the worker's hands may or may not have been answered; the last one is not
    assert all(a is None for a in rest[-1][1])
    assert preparer.broken is not None and preparer.pid is None


class _SlowOnMarker(Decider):
    """A Decider that stalls on one subject: a worker stuck on a pathological mail."""

    def decide(self, mail: ParsedMail, *, explain: bool = False) -> Decision:
        if mail.subject == "stall":
            time.sleep(30)
        return super().decide(mail, explain=explain)


def test_a_worker_that_hangs_is_killed_after_the_timeout(decider: Decider) -> None:
    slow = _SlowOnMarker(
        decider.rules,
        decider.model,
        decider.policy,
        threshold=decider.threshold,
        model_weight=decider.model_weight,
    )
    raws = [mails.acute(), mails.acute(subject="stall"), mails.preparation()]
    assert prepare(slow, raws[0]) is not None  # warm: the worker inherits a model ready to use
    started = time.monotonic()
    with Preparer(slow, timeout=2.0) as preparer:
        pid = preparer.pid
        out = list(preparer.ahead(_batches(raws, 1)))
    assert time.monotonic() - started < 15  # not the 30 s the stalled mail would take
    assert isinstance(out[0][1][0], Prepared)
    assert out[1][1] == [None] and out[2][1] == [None]
    assert preparer.broken is not None and "2 s" in preparer.broken
    assert _is_zombie_or_gone(pid)


def _is_zombie_or_gone(pid: int | None) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return any(line.startswith("State:") and "Z" in line for line in fh)
    except OSError:
        return True


def test_the_worker_stops_when_the_pass_ends_and_the_service_collects_garbage_again(decider: Decider) -> None:
    preparer = Preparer(decider)
    pid = preparer.pid
    assert gc.get_freeze_count() > 0  # while the worker shares our pages, collections leave them alone
    list(preparer.ahead(_batches(_mixed(2), 1)))
    preparer.close()
    assert _is_zombie_or_gone(pid)
    assert gc.get_freeze_count() == 0
    assert preparer.private_mb is not None and preparer.private_mb > 0  # read before it stopped (bench figure)
    assert preparer.cpu_seconds is not None and 0 <= preparer.cpu_seconds < 60  # read too (in clock ticks)


@pytest.mark.integration
def test_a_backlog_is_decided_the_same_with_and_without_the_worker(dovecot, smtp_sink, make_config) -> None:
    labels: dict[bool, list[str]] = {}
    for ahead in (True, False):
        user = f"ahead{int(ahead)}"
        dovecot.add_user(user, f"pw-{user}")
        client = dovecot.client(user)
        for raw in _mixed(12):  # the same texts each time; new Message-IDs, so not duplicates of the first run
            client.append("INBOX", raw)
        client.logout()
        extra = f"[imap]\nbatch_size = 4\n[service]\ndecide_ahead = {'true' if ahead else 'false'}\n"
        cfg = make_config(dovecot=dovecot, user=user, sink=smtp_sink, extra=extra)
        service, engine = build_service(cfg)
        assert service.run_once() == 12
        worker = service.state.preparer
        assert (worker is not None) is ahead
        assert worker is None or worker.broken is None
        with service.sessions() as s:
            rows = s.execute(
                select(Verdict.label)
                .join(Message, Message.id == Verdict.message_id)
                .where(Message.mailbox == service.source.name)
                .order_by(Message.uid)
            ).all()
        labels[ahead] = [str(label) for (label,) in rows]
        engine.dispose()
    assert len(labels[True]) == 12
    assert labels[True] == labels[False]


def test_a_failed_fetch_of_the_next_batch_does_not_cost_the_batch_in_hand(decider: Decider) -> None:
    first = _fetched(_mixed(3))

    def batches() -> Iterator[list[FetchedMail]]:
        yield first
        raise TransientMailboxError("FETCH failed")

    with Preparer(decider, share=False) as preparer:
        stream = preparer.ahead(batches())
        batch, answers = next(stream)  # stored and marked by the service before the error goes up
        assert batch == first and all(isinstance(a, Prepared) for a in answers)
        with pytest.raises(TransientMailboxError):
            next(stream)


def test_large_mail_stays_with_the_service(decider: Decider) -> None:
    small, large = mails.acute(), mails.acute() + b"x" * (MAIL_BYTES + 1)
    assert _wanted([FetchedMail(1, small, len(small)), FetchedMail(2, large, len(large))]) == [small, None]
    # and a batch hands over at most BATCH_BYTES in all
    piece = b"Subject: x\r\n\r\n" + b"y" * (MAIL_BYTES - 100)
    batch = [FetchedMail(i, piece, len(piece)) for i in range(20)]
    handed = [raw for raw in _wanted(batch) if raw is not None]
    assert 0 < sum(map(len, handed)) <= BATCH_BYTES < sum(len(f.raw) for f in batch)


def test_the_pipeline_stores_the_decision_the_worker_made(make_config) -> None:
    service, engine = build_service(make_config())
    raw = mails.preparation()
    ahead = prepare(service.pipeline.decider, raw)
    assert ahead is not None and ahead.decision.label == "preparation"
    # a decision only the worker could have made: if the pipeline decided again, it would not be stored
    marked = Prepared(ahead.mail, dataclasses.replace(ahead.decision, score=42.5), ahead.timings)
    batch = [FetchedMail(1, raw, len(raw)), FetchedMail(2, mails.acute(), 100)]
    outcomes = service.pipeline.process_batch("INBOX-test", 7, batch, [marked, None])
    assert [o.status for o in outcomes] == ["decided", "decided"]
    with service.sessions() as s:
        rows = s.execute(select(Message.uid, Verdict.score).join(Verdict, Verdict.message_id == Message.id))
        scores = {int(uid): float(score) for uid, score in rows}
    assert scores[1] == 42.5
    assert scores[2] != 42.5  # the mail without a prepared result was decided in-process
    engine.dispose()


class _Marking(Decider):
    """The decider a reload brings: its decisions carry a score no real decision has."""

    def decide(self, mail: ParsedMail, *, explain: bool = False) -> Decision:
        return dataclasses.replace(super().decide(mail, explain=explain), score=-99.0)


class _ReloadAfterFirstBatch:
    """An observer that swaps the pipeline's decider once the first mail is committed, like a reload."""

    def __init__(self, service) -> None:
        self.service, self.done = service, False

    def connected(self) -> None: ...
    def polled(self) -> None: ...
    def stopping(self) -> None: ...

    def outcome(self, outcome) -> None:
        if not self.done:
            old = self.service.pipeline.decider
            self.service.pipeline.decider = _Marking(
                old.rules, old.model, old.policy, threshold=old.threshold, model_weight=old.model_weight
            )
            self.done = True


@pytest.mark.integration
def test_a_reload_during_a_backlog_stops_the_worker_and_the_rest_uses_the_new_rules(
    dovecot, smtp_sink, make_config
) -> None:
    dovecot.add_user("reloading", "pw-reloading")
    client = dovecot.client("reloading")
    for raw in _mixed(12):
        client.append("INBOX", raw)
    client.logout()
    cfg = make_config(dovecot=dovecot, user="reloading", sink=smtp_sink, extra="[imap]\nbatch_size = 4\n")
    service, engine = build_service(cfg)
    service.state.observers.append(_ReloadAfterFirstBatch(service))
    assert service.run_once() == 12
    worker = service.state.preparer
    assert worker is not None and worker.pid is None  # stopped at the second batch, not at the end
    with service.sessions() as s:
        scores = [float(v) for (v,) in s.execute(select(Verdict.score).join(Message).order_by(Message.uid))]
    assert len(scores) == 12
    assert all(v != -99.0 for v in scores[:4])  # the first batch, committed before the reload
    assert all(v == -99.0 for v in scores[4:])  # everything after it, decided with the new decider
    engine.dispose()


def test_decisions_prepared_with_a_replaced_decider_are_set_aside(make_config) -> None:
    service, engine = build_service(make_config())
    old = service.pipeline.decider
    raw = mails.preparation()
    ahead = prepare(old, raw)
    assert ahead is not None
    marked = Prepared(ahead.mail, dataclasses.replace(ahead.decision, score=42.5), ahead.timings)
    # a reload between the worker's decision and the batch's transaction
    new = _Marking(old.rules, old.model, old.policy, threshold=old.threshold, model_weight=old.model_weight)
    service.pipeline.replace_setup(new, service.pipeline.roster, service.pipeline.routing)
    outcomes = service.pipeline.process_batch(
        "INBOX-test", 7, [FetchedMail(1, raw, len(raw)), FetchedMail(2, mails.acute(), 100)], [marked, None], old
    )
    assert [o.status for o in outcomes] == ["decided", "decided"]
    with service.sessions() as s:
        scores = [float(v) for (v,) in s.execute(select(Verdict.score).join(Message).order_by(Message.uid))]
    assert scores == [-99.0, -99.0]  # both decided again, with the decider the reload brought
    engine.dispose()


def test_the_service_takes_a_share_of_the_work_while_it_waits_for_the_worker() -> None:
    balance = Balance()
    assert balance.take(100) == 0  # at first the worker gets everything
    for _ in range(4):
        balance.answered(waited=0.05, size=100)  # the service had to wait: the worker is the slower side
    assert balance.kept == 1 + 2 + 4 + 8  # the step doubles while the answers point the same way
    assert balance.take(100) == 15
    assert balance.take(7) == 3  # never more than half a batch
    balance.answered(waited=0.0, size=100)  # the answer was there already: the worker had been idle
    assert balance.kept == 15 - 4  # turning back halves the step
    balance.answered(waited=0.05, size=100)
    assert balance.kept == 11 + 2
    for _ in range(100):
        balance.answered(waited=0.05, size=100)
    assert balance.take(100) == 50
    for _ in range(100):
        balance.answered(waited=0.0, size=100)
    assert balance.take(100) == 0
    assert balance.kept_in_all == 15 + 3 + 50


def test_the_share_settles_where_both_sides_take_as_long() -> None:
    balance = Balance()
    worker_ms, service_ms, size = 3.0, 2.0, 100  # per mail; the service also spends 150 ms storing a batch
    for _ in range(30):
        kept = balance.take(size)
        waited = (size - kept) * worker_ms - (kept * service_ms + 150)
        balance.answered(waited=max(waited, 0) / 1000, size=size)
    # both take as long at 150 + 2k = 3(100 - k): k = 30
    assert 27 <= balance.kept <= 33


def test_the_mails_the_service_keeps_are_the_end_of_the_batch() -> None:
    batch = [FetchedMail(uid=i, raw=mails.acute(), size=100) for i in range(1, 6)]
    handed = _wanted(batch, kept=2)
    assert [raw is not None for raw in handed] == [True, True, True, False, False]


def test_a_slow_worker_leaves_part_of_each_batch_to_the_service(decider: Decider) -> None:
    raws = _mixed(40)
    with Preparer(decider) as preparer:
        seen = list(preparer.ahead(_batches(raws, 4)))  # nothing to do between answers: the service waits
    answers = [a for _, batch_answers in seen for a in batch_answers]
    kept = [a is None for a in answers]
    assert preparer.balance is not None and preparer.balance.kept_in_all == sum(kept) > 0
    assert not any(kept[:4])  # the first batch went to the worker whole
    for ahead, raw in zip(answers, raws, strict=True):
        if ahead is not None:
            _same_decision(ahead, decider, raw)
