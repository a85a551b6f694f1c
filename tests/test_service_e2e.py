"""The walking skeleton against real servers: Dovecot in, aiosmtpd out."""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from email import policy

import pytest
from sqlalchemy import event, func, select

from omo_mailbot.models import Case, MailboxCursor, Message, OutboxMail, Verdict
from omo_mailbot.service import ServiceState, build_decider, build_service

from . import mails

pytestmark = pytest.mark.integration


def _append(dovecot, user, raw: bytes) -> None:
    c = dovecot.client(user)
    c.append("INBOX", raw)
    c.logout()


def _flags(dovecot, user) -> dict[int, tuple[bytes, ...]]:
    c = dovecot.client(user)
    c.select_folder("INBOX", readonly=True)
    flags = c.get_flags(c.search("ALL"))
    c.logout()
    return flags


def _count(service, model, *where) -> int:
    with service.sessions() as s:
        return int(s.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def test_acute_mail_gets_exactly_one_reply_with_guidance_and_rfc3834_headers(
    dovecot, mailbox_user, smtp_sink, make_config
):
    original = mails.acute()
    _append(dovecot, mailbox_user, original)
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    service, engine = build_service(cfg)
    service.run_once()

    replies = [m for m in smtp_sink.messages if "els.vermeer@gemeente-voorbeeld.nl" in m.rcpt_tos]
    assert len(replies) == 1
    reply = email.message_from_bytes(replies[0].content, policy=policy.default)
    assert replies[0].mail_from == "<>"  # the null envelope sender of RFC 3834 (MAIL FROM:<>)
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["X-Auto-Response-Suppress"] == "All"
    assert reply["Precedence"] == "bulk"
    source = email.message_from_bytes(original, policy=policy.default)
    assert reply["In-Reply-To"].strip() == source["Message-ID"].strip()
    assert source["Message-ID"] in reply["References"]
    assert reply["Message-ID"].endswith("@minbzk.nl>")
    text = reply.get_body(("plain",)).get_content()
    assert "070-3738080" in text and "06-29401416" in text
    assert "crisisstructuur" in text
    assert "OMO-" in reply["Subject"]
    # the duty alert went out too, marked as machine mail
    alerts = [m for m in smtp_sink.messages if "dienst@omo.example" in m.rcpt_tos]
    assert len(alerts) == 1
    assert email.message_from_bytes(alerts[0].content)["Auto-Submitted"] == "auto-generated"
    assert _count(service, OutboxMail, OutboxMail.status == "sent") == 2
    engine.dispose()


def test_preparation_mail_gets_no_reply_and_is_queued_as_a_case(dovecot, mailbox_user, smtp_sink, make_config):
    _append(dovecot, mailbox_user, mails.preparation())
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    service, engine = build_service(cfg)
    service.run_once()
    assert smtp_sink.messages == []
    with service.sessions() as s:
        case = s.execute(select(Case)).scalar_one()
        verdict = s.execute(select(Verdict)).scalar_one()
    assert case.label == "preparation" and case.status == "new" and case.reference.startswith("OMO-")
    assert verdict.label == "preparation" and verdict.auto_reply is False
    assert verdict.hits and verdict.rules_hash and verdict.model_version
    engine.dispose()


def test_mail_is_read_without_setting_seen_and_marked_only_after_commit(dovecot, mailbox_user, smtp_sink, make_config):
    _append(dovecot, mailbox_user, mails.preparation())
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    service, engine = build_service(cfg)
    service.run_once()
    (flags,) = _flags(dovecot, mailbox_user).values()
    assert b"\\Seen" not in flags
    assert cfg.imap.processed_keyword.encode() in flags
    engine.dispose()


def test_running_twice_processes_nothing_twice(dovecot, mailbox_user, smtp_sink, make_config):
    for raw in (mails.acute(), mails.preparation()):
        _append(dovecot, mailbox_user, raw)
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    for _ in range(2):
        service, engine = build_service(cfg)
        service.run_once()
        engine.dispose()
    assert _count(service, Message) == 2
    assert _count(service, Verdict) == 2
    assert _count(service, Case) == 2
    assert len(smtp_sink.messages) == 2  # one reply + one duty alert, once


def test_broken_mail_is_stored_with_its_error_and_the_next_mail_is_still_processed(
    dovecot, mailbox_user, smtp_sink, make_config
):
    _append(dovecot, mailbox_user, mails.BROKEN)
    _append(dovecot, mailbox_user, b"\x00\x01 not a mail at all \xff")
    _append(dovecot, mailbox_user, mails.acute())
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    service, engine = build_service(cfg)
    service.run_once()
    with service.sessions() as s:
        rows = s.execute(select(Message).order_by(Message.uid)).scalars().all()
        cases = {c.id: c for c in s.execute(select(Case)).scalars()}
    assert len(rows) == 3
    assert all(r.raw for r in rows)  # nothing dropped
    broken, garbage, good = rows
    assert cases[broken.case_id].needs_human
    assert garbage.status == "parse_failed" and garbage.error
    assert cases[garbage.case_id].needs_human
    assert good.status == "decided"
    assert any("els.vermeer@gemeente-voorbeeld.nl" in m.rcpt_tos for m in smtp_sink.messages)
    engine.dispose()


def test_mail_appended_during_idle_is_answered_without_waiting_for_a_poll(
    dovecot, mailbox_user, smtp_sink, make_config
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)  # poll interval 600 s
    state = ServiceState()
    service, engine = build_service(cfg, state=state)
    runner = threading.Thread(target=service.run_forever, daemon=True)
    runner.start()
    try:
        time.sleep(1.0)  # let it reach IDLE
        start = time.perf_counter()
        _append(dovecot, mailbox_user, mails.acute())
        assert smtp_sink.wait_for(
            lambda msgs: any("els.vermeer@gemeente-voorbeeld.nl" in m.rcpt_tos for m in msgs), timeout=10
        )
        latency = next(m.at for m in smtp_sink.messages if "els.vermeer@gemeente-voorbeeld.nl" in m.rcpt_tos) - start
        assert latency < 10
    finally:
        state.stop.set()
        state.outbox_wake.set()
        runner.join(timeout=10)
    assert not runner.is_alive(), "the service did not stop within 10 s"
    engine.dispose()


@pytest.mark.parametrize(
    ("now", "day"),
    [
        (datetime(2026, 12, 1, 6, 30, tzinfo=UTC), "dinsdag 1 december 2026"),  # 07:30 in Amsterdam, before the digest
        (datetime(2026, 12, 4, 16, 0, tzinfo=UTC), "maandag 7 december 2026"),  # Friday afternoon
    ],
)
def test_the_answer_names_the_day_of_the_first_digest_and_no_name_from_the_mail(
    dovecot, mailbox_user, smtp_sink, make_config, now, day
):
    _append(dovecot, mailbox_user, mails.acute())
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    service, engine = build_service(cfg, clock=lambda: now)
    service.run_once()
    engine.dispose()

    (reply,) = [m for m in smtp_sink.messages if "els.vermeer@gemeente-voorbeeld.nl" in m.rcpt_tos]
    parsed = email.message_from_bytes(reply.content, policy=policy.default)
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    assert f"uiterlijk op {day} onder ogen" in text and f"uiterlijk op {day} onder ogen" in html
    assert text.startswith("Geachte heer, mevrouw,")  # a display name is the sender's own text, never our greeting
    assert "Vermeer" not in text and "Vermeer" not in html


def test_uidvalidity_change_rescans_without_duplicates(dovecot, mailbox_user, smtp_sink, make_config):
    _append(dovecot, mailbox_user, mails.preparation())
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    service, engine = build_service(cfg)
    service.run_once()
    with service.sessions.begin() as s:  # pretend the server renumbered the folder
        from omo_mailbot.models import MailboxCursor

        s.execute(MailboxCursor.__table__.update().values(uidvalidity=1))
    _append(dovecot, mailbox_user, mails.acute())
    service.run_once()
    assert _count(service, Message) == 2
    assert _count(service, Case) == 2
    engine.dispose()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_cleanly_within_seconds_on_a_signal(dovecot, mailbox_user, smtp_sink, make_config, tmp_path, signum):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "omo_mailbot.cli", "--config", str(tmp_path / "config.toml"), "run"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the mailbox is open (then it sits in IDLE)
            if "mailbox open" in line or time.monotonic() > deadline:
                break
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signum)
        code = proc.wait(timeout=15)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    assert took < cfg.service.shutdown_grace_seconds + 3


def test_a_backlog_commits_one_transaction_per_fetch_batch(dovecot, mailbox_user, smtp_sink, make_config):
    for i in range(7):
        _append(
            dovecot, mailbox_user, mails.preparation(subject=f"Advies windpark {i}", sender=f"p{i}@gemeente.example")
        )
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra="[imap]\nbatch_size = 3\n")
    service, engine = build_service(cfg)
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    uidvalidity = service.source.open()
    try:
        assert service.ingest_pass(uidvalidity) == 7
    finally:
        service.source.close()
    # the cursor read, then batches of 3 + 3 + 1: one transaction each, the cursor moving in it
    assert len(commits) == 1 + 3
    assert _count(service, Verdict) == 7 and _count(service, Case) == 7
    with service.sessions() as s:
        last_uid = s.execute(select(MailboxCursor.last_uid)).scalar_one()
    assert last_uid == max(_flags(dovecot, mailbox_user))
    assert all(b"$OmoProcessed" in f for f in _flags(dovecot, mailbox_user).values())
    engine.dispose()


def test_a_mail_that_breaks_the_pipeline_inside_a_batch_costs_only_itself(
    dovecot, mailbox_user, smtp_sink, make_config
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)

    def bug(mail) -> Exception | None:  # as a bug in a rule or the model would meet one mail
        return RuntimeError("a bug met a mail it did not expect") if "ONTPLOF" in mail.subject else None

    subjects = ["Advies windpark", "Vraag over opvang", "ONTPLOF", "Raadsbesluit", "Nazorg na de avond"]
    for i, subject in enumerate(subjects):
        _append(dovecot, mailbox_user, mails.preparation(subject=subject, sender=f"b{i}@gemeente.example"))
    service, engine = build_service(cfg, decider=_failing(build_decider(cfg), bug))  # type: ignore[arg-type]
    service.run_once()
    with service.sessions() as s:
        rows = s.execute(select(Message).order_by(Message.uid)).scalars().all()
        cases = {c.id: c for c in s.execute(select(Case)).scalars()}
    verdicts = _count(service, Verdict)
    assert [r.subject for r in rows] == subjects  # every mail stored once, in order
    assert [r.status for r in rows] == ["decided", "decided", "error", "decided", "decided"]
    assert "a bug met a mail it did not expect" in (rows[2].error or "")
    assert cases[rows[2].case_id].needs_human
    assert verdicts == 4
    assert all(b"$OmoProcessed" in f for f in _flags(dovecot, mailbox_user).values())
    engine.dispose()


def _failing(real, failure):
    """``real`` Decider, except that ``failure(mail)`` may return an exception to raise instead."""

    class Failing:
        def __getattr__(self, name: str):
            return getattr(real, name)

        def decide(self, mail, **kw):
            exc = failure(mail)
            if exc is not None:
                raise exc
            return real.decide(mail, **kw)

    return Failing()


def _colliding(real, times: int):
    """A decider whose first ``times`` decisions hit a unique key, as a row written at once by two
    instances would; the mail's own bytes are not stored, so it must not count as a duplicate."""
    from sqlalchemy.exc import IntegrityError

    calls = {"n": 0}

    def collide(_mail) -> Exception | None:
        calls["n"] += 1
        unique = IntegrityError("INSERT INTO counters ...", {}, Exception("UNIQUE constraint failed"))
        return unique if calls["n"] <= times else None

    return _failing(real, collide)


@pytest.mark.parametrize(("collisions", "status"), [(1, "decided"), (5, "error")])
def test_a_unique_key_collision_that_is_not_the_mail_itself_never_passes_the_mail_over(make_config, collisions, status):
    from omo_mailbot.mailbox import FetchedMail

    cfg = make_config()
    service, engine = build_service(cfg, decider=_colliding(build_decider(cfg), collisions))  # type: ignore[arg-type]
    raw = mails.acute()
    outcome = service.pipeline.process("INBOX", 1, FetchedMail(uid=1, raw=raw, size=len(raw)))
    assert outcome.status == status  # decided on the second try, or kept for a human; never "duplicate"
    with service.sessions() as s:
        (row,) = s.execute(select(Message)).scalars().all()
        cursor = s.execute(select(MailboxCursor.last_uid)).scalar_one()
        case = s.get(Case, row.case_id)
    assert row.status == status and cursor == 1
    assert case is not None and (case.needs_human == (status == "error"))
    engine.dispose()


def _database_failing(real, times: int):
    """A decider during whose first ``times`` decisions the database fails (a failover, a deadlock)."""
    from sqlalchemy.exc import OperationalError

    calls = {"n": 0}

    def fail(_mail) -> Exception | None:
        calls["n"] += 1
        return (
            OperationalError("SELECT ...", {}, Exception("server closed the connection"))
            if calls["n"] <= times
            else None
        )

    return _failing(real, fail)


def test_a_failing_database_stores_nothing_and_is_not_blamed_on_the_mail(make_config):
    from sqlalchemy.exc import OperationalError

    from omo_mailbot.mailbox import FetchedMail

    cfg = make_config()
    service, engine = build_service(cfg, decider=_database_failing(build_decider(cfg), 1))  # type: ignore[arg-type]
    raw = mails.acute()
    with pytest.raises(OperationalError):
        service.pipeline.process("INBOX", 1, FetchedMail(uid=1, raw=raw, size=len(raw)))
    assert _count(service, Message) == 0 and _count(service, Case) == 0 and _count(service, MailboxCursor) == 0
    assert service.pipeline.process("INBOX", 1, FetchedMail(uid=1, raw=raw, size=len(raw))).status == "decided"
    engine.dispose()


def test_the_running_service_waits_out_a_failing_database_and_then_answers_once(
    dovecot, mailbox_user, smtp_sink, make_config
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    state = ServiceState()
    service, engine = build_service(cfg, state=state, decider=_database_failing(build_decider(cfg), 2))  # type: ignore[arg-type]
    _append(dovecot, mailbox_user, mails.acute())
    runner = threading.Thread(target=service.run_forever, daemon=True)
    runner.start()
    try:
        assert smtp_sink.wait_for(
            lambda msgs: any("els.vermeer@gemeente-voorbeeld.nl" in m.rcpt_tos for m in msgs), timeout=30
        )
        time.sleep(0.5)
    finally:
        state.stop.set()
        state.outbox_wake.set()
        runner.join(timeout=15)
    with service.sessions() as s:
        statuses = [m.status for m in s.execute(select(Message)).scalars()]
    engine.dispose()
    assert statuses == ["decided"]  # stored once, decided, never an error case
    assert len([m for m in smtp_sink.messages if "els.vermeer@gemeente-voorbeeld.nl" in m.rcpt_tos]) == 1
    assert all(b"$OmoProcessed" in f for f in _flags(dovecot, mailbox_user).values())


def test_imap_numbers_up_to_2_to_the_32_and_a_huge_message_id_are_stored(make_config):
    """RFC 3501 numbers are unsigned 32-bit; Message-IDs have no length limit but our column has one."""
    from omo_mailbot.mailbox import FetchedMail

    cfg = make_config()
    service, engine = build_service(cfg)
    huge_id = "<" + "x" * 1500 + "@gemeente.example>"
    raw = mails.acute(msgid=huge_id)
    outcome = service.pipeline.process("INBOX", 4_294_967_295, FetchedMail(uid=4_294_967_000, raw=raw, size=len(raw)))
    assert outcome.status == "decided"
    with service.sessions() as s:
        (row,) = s.execute(select(Message)).scalars().all()
        cursor = s.execute(select(MailboxCursor)).scalar_one()
    engine.dispose()
    assert (row.uidvalidity, row.uid) == (4_294_967_295, 4_294_967_000)
    assert (cursor.uidvalidity, cursor.last_uid) == (4_294_967_295, 4_294_967_000)
    assert row.message_id_header == huge_id[:998]


def test_two_mails_the_server_returned_without_a_body_are_two_cases_for_a_human_not_a_duplicate(make_config):
    from omo_mailbot.mailbox import FetchedMail

    cfg = make_config()
    service, engine = build_service(cfg)
    outcomes = [service.pipeline.process("INBOX", 1, FetchedMail(uid=uid, raw=b"", size=0)) for uid in (1, 2)]
    with service.sessions() as s:
        rows = s.execute(select(Message).order_by(Message.uid)).scalars().all()
    engine.dispose()
    assert [o.status for o in outcomes] == ["parse_failed", "parse_failed"]
    assert [(r.uid, r.status) for r in rows] == [(1, "parse_failed"), (2, "parse_failed")]
    assert all("empty message" in (r.error or "") for r in rows)


def test_a_case_opened_just_after_midnight_on_new_years_day_in_amsterdam_is_numbered_in_the_new_year(make_config):
    from omo_mailbot.mailbox import FetchedMail

    cfg = make_config()
    new_year_in_amsterdam = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # 00:30 on 1 January 2027 there
    service, engine = build_service(cfg, clock=lambda: new_year_in_amsterdam)
    raw = mails.preparation()
    outcome = service.pipeline.process("INBOX", 1, FetchedMail(uid=1, raw=raw, size=len(raw)))
    engine.dispose()
    assert outcome.case_reference == "OMO-2027-0001"
