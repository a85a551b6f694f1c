"""The SMTP receiver is down or refuses: replies wait in the outbox and go out once, in order."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from omo_mailbot.models import OutboxMail
from omo_mailbot.service import build_service

from .harness import append_all, backlog, reliable_config_extra

pytestmark = pytest.mark.integration


def _acute_backlog(n: int, prefix: str):
    mails = []
    seed = 0
    while len(mails) < n:
        mails += [m for m in backlog(n * 3, seed=seed, prefix=prefix) if m.kind == "acute"]
        seed += 1
    return mails[:n]


def _rows(service) -> list[OutboxMail]:
    with service.sessions() as s:
        return list(s.execute(select(OutboxMail).order_by(OutboxMail.id)).scalars())


def _drain_until(service, pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.drain_outbox()
        if pred(_rows(service)):
            return True
        time.sleep(0.2)
    return False


def _received_ids(sink) -> list[str]:
    import email

    return [str(email.message_from_bytes(m.content)["Message-ID"]).strip() for m in sink.messages]


def _restart(sink) -> None:
    """A stopped aiosmtpd controller cannot start again: a new one on the same port, same handler."""
    from aiosmtpd.controller import Controller

    sink.controller = Controller(sink.controller.handler, hostname="127.0.0.1", port=sink.port, ready_timeout=5.0)
    sink.start()


@pytest.fixture
def service(dovecot, mailbox_user, smtp_sink, make_config):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=reliable_config_extra())
    append_all(dovecot, mailbox_user, [m.raw for m in _acute_backlog(3, "smtp")])
    svc, engine = build_service(cfg)
    yield svc
    engine.dispose()


def test_temporary_refusal_keeps_replies_in_the_outbox_and_sends_them_once_in_order(service, smtp_sink):
    smtp_sink.refuse_with = "451 4.3.0 Probeer het later opnieuw"
    service.run_once()
    rows = _rows(service)
    assert len(rows) == 6  # three replies and three duty alerts
    assert smtp_sink.messages == []
    assert all(r.status == "pending" and r.attempts >= 1 and "451" in (r.last_error or "") for r in rows)

    smtp_sink.refuse_with = None
    assert _drain_until(service, lambda rows: all(r.status == "sent" for r in rows), 15)
    rows = _rows(service)
    assert _received_ids(smtp_sink) == [r.message_id_header for r in rows]  # in queue order, each once


def test_a_receiver_that_is_down_for_a_while_gets_everything_once_after_it_returns(service, smtp_sink):
    smtp_sink.stop()
    try:
        service.run_once()
        first, *rest = rows = _rows(service)
        assert len(rows) == 6 and all(r.status == "pending" for r in rows)
        assert "cannot reach SMTP" in (first.last_error or "")
        # the receiver is down, not a mail: the others wait behind the first, untried
        assert all(r.attempts == 0 and r.next_attempt_at >= first.next_attempt_at for r in rest)
        time.sleep(1.0)
        service.drain_outbox()  # still down: one more try of the first mail, nothing lost
        rows = _rows(service)
        assert all(r.status == "pending" for r in rows)
        assert rows[0].next_attempt_at > first.next_attempt_at  # it was tried again, later each time...
        assert rows[0].attempts == 0  # ...and an outage never counts against a mail's attempts
    finally:
        _restart(smtp_sink)
    assert _drain_until(service, lambda rows: all(r.status == "sent" for r in rows), 15)
    rows = _rows(service)
    assert _received_ids(smtp_sink) == [r.message_id_header for r in rows], [(r.id, r.attempts) for r in rows]


def test_a_permanent_refusal_parks_the_mail_as_failed_without_retrying(service, smtp_sink):
    smtp_sink.refuse_with = "550 5.1.1 Onbekende ontvanger"
    service.run_once()
    time.sleep(1.5)  # longer than the whole backoff: nothing may be tried again
    service.drain_outbox()
    rows = _rows(service)
    assert len(rows) == 6
    assert all(r.status == "failed" and r.attempts == 1 and "550" in (r.last_error or "") for r in rows)
    assert smtp_sink.messages == []


class FlakyReceiver:
    """A Mailer whose receiver is unreachable (or refuses our login) for the first ``failures`` sends."""

    def __init__(self, failures: int, error: type[Exception] | None = None) -> None:
        from omo_mailbot.errors import ReceiverUnavailable

        self.failures = failures
        self.error = error or ReceiverUnavailable
        self.accepted: list[bytes] = []
        self.during_send: Callable[[], None] = lambda: None

    def send(self, envelope_from: str, recipient: str, raw: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error("cannot reach SMTP 127.0.0.1:25: ConnectionRefusedError")
        self.during_send()
        self.accepted.append(raw)

    def close(self) -> None:
        return None


def _queue(make_config, n: int, extra: str = ""):
    from omo_mailbot.outbox import enqueue
    from omo_mailbot.service import open_database

    cfg = make_config(extra="[smtp]\nbackoff_base_seconds = 0.2\nbackoff_max_seconds = 1.0\n" + extra)
    engine, sessions = open_database(cfg)
    with sessions.begin() as s:
        for i in range(n):
            enqueue(
                s,
                kind="auto_reply",
                raw=f"mail {i}".encode(),
                recipient=f"r{i}@x.example",
                message_id=f"<m{i}@x>",
                now=datetime.now(UTC),
            )
    return cfg, engine, sessions


def test_a_receiver_that_fails_once_more_at_recovery_does_not_let_later_mail_overtake(make_config):
    from omo_mailbot.outbox import OutboxWorker

    cfg, engine, sessions = _queue(make_config, 5)
    receiver = FlakyReceiver(failures=2)
    worker = OutboxWorker(sessions, receiver, cfg.smtp, holder="t", clock=lambda: datetime.now(UTC))
    deadline = time.monotonic() + 10
    while len(receiver.accepted) < 5 and time.monotonic() < deadline:
        worker.run_once()
        time.sleep(0.05)
    engine.dispose()
    assert receiver.accepted == [f"mail {i}".encode() for i in range(5)]


def test_a_refused_smtp_login_holds_the_whole_queue_and_parks_nothing(make_config):
    from omo_mailbot.errors import SmtpLoginRefused
    from omo_mailbot.outbox import OutboxWorker

    cfg, engine, sessions = _queue(make_config, 4, "max_attempts = 2\n")
    receiver = FlakyReceiver(failures=5, error=SmtpLoginRefused)  # more refusals than max_attempts allows
    worker = OutboxWorker(sessions, receiver, cfg.smtp, holder="t", clock=lambda: datetime.now(UTC))
    deadline = time.monotonic() + 20
    while len(receiver.accepted) < 4 and time.monotonic() < deadline:
        worker.run_once()
        with sessions() as s:
            assert s.execute(select(OutboxMail).where(OutboxMail.status == "failed")).first() is None
        time.sleep(0.05)
    engine.dispose()
    assert receiver.failures == 0 and receiver.accepted == [f"mail {i}".encode() for i in range(4)]


def test_a_row_is_claimed_only_when_its_turn_comes_so_a_slow_send_cannot_outlive_the_others_leases(make_config):
    from omo_mailbot.outbox import OutboxWorker

    cfg, engine, sessions = _queue(make_config, 3)
    now = [datetime.now(UTC)]
    receiver = FlakyReceiver(failures=0)
    slow = OutboxWorker(sessions, receiver, cfg.smtp, holder="slow", clock=lambda: now[0], lease_seconds=60)
    other = OutboxWorker(sessions, FlakyReceiver(failures=0), cfg.smtp, holder="other", clock=lambda: now[0])

    def first_send_takes_two_minutes() -> None:
        receiver.during_send = lambda: None
        now[0] += timedelta(minutes=2)  # the lease of this row runs out during its send
        assert other.reap() == 1 and other.run_once().sent == 3  # the other worker takes over every row
        assert other.mailer.accepted == [b"mail 0", b"mail 1", b"mail 2"]  # type: ignore[attr-defined]

    receiver.during_send = first_send_takes_two_minutes
    stats = slow.run_once()
    # the slow worker sent its one claimed row (the permitted double: accepted, then the lease was gone),
    # recorded nothing over the other worker's result, and claimed nothing else
    assert receiver.accepted == [b"mail 0"] and stats.sent == 1
    with sessions() as s:
        rows = list(s.execute(select(OutboxMail).order_by(OutboxMail.id)).scalars())
    engine.dispose()
    assert [(r.status, r.lease_holder) for r in rows] == [("sent", "other")] * 3
