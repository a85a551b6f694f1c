"""The daily digest: what each person reads, once per person per day, and only on working days.

Cases come from mails in a real Dovecot mailbox; digests leave through the
outbox to aiosmtpd. The clock is injected; no global time is frozen.
"""

from __future__ import annotations

import email
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from email import policy
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from omo_mailbot import cli, db
from omo_mailbot.models import Case, DigestRun, OutboxMail
from omo_mailbot.outbox import enqueue
from omo_mailbot.reload import RuleReloader
from omo_mailbot.scheduler import DigestScheduler
from omo_mailbot.service import build_service

from . import mails
from .rosterkit import ADA, BOB, CAS, DEE, TUESDAY, FixedClock, write_roster

AMS = ZoneInfo("Europe/Amsterdam")
PRESENT = {ADA, BOB, DEE}  # Cas is on leave in December


def _append(dovecot, user, *raws: bytes) -> None:
    c = dovecot.client(user)
    for raw in raws:
        c.append("INBOX", raw)
    c.logout()


def _digests(sink) -> list[tuple[str, email.message.EmailMessage]]:
    out = []
    for m in sink.messages:
        msg = email.message_from_bytes(m.content, policy=policy.default)
        if str(msg["Subject"]).startswith("Omo-digest"):
            out.append((m.rcpt_tos[0], msg))
    return out


def _local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=AMS).astimezone(UTC)


def test_a_digest_shows_a_person_their_cases_the_queue_acute_mail_stale_cases_and_failures(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    clock = FixedClock(TUESDAY - timedelta(days=6))  # Wednesday 25 November
    _append(
        dovecot,
        mailbox_user,
        mails.preparation(subject="Advies windpark <script>alert(1)</script>"),
        mails.acute(sender="noreply@meldingen.example", name="Meldsysteem"),
        mails.BROKEN,
    )
    service, engine = build_service(cfg, clock=clock)
    service.run_once()
    with service.sessions.begin() as s:  # an outbox mail that could not be delivered
        row_id = enqueue(
            s, kind="auto_reply", raw=b"x", recipient="weg@elders.example", message_id="<f@x>", now=clock()
        )
        row = s.get(OutboxMail, row_id)
        assert row is not None
        row.status, row.last_error = "failed", "550 5.1.1 mailbox unavailable"
    clock.now = TUESDAY  # four working days later: the windpark case has had no action since
    _append(dovecot, mailbox_user, mails.acute())  # an acute mail of the last 24 hours
    service.run_once()
    report = service.digests.run()
    service.drain_outbox()
    engine.dispose()

    assert set(report.sent) == PRESENT and (CAS, "absent until 2026-12-31") in report.skipped
    msg = next(m for to, m in _digests(smtp_sink) if to == ADA)
    assert msg["Auto-Submitted"] == "auto-generated"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    with db.session_factory(db.make_engine(cfg.database.url))() as s:
        refs = {c.subject: c.reference for c in s.scalars(select(Case))}
    mine = refs["Advies windpark <script>alert(1)</script>"]
    assert text.index("== Uw zaken") < text.index(mine) < text.index("== Niet toegewezen")
    assert "onderwerp Energie en windparken: WIND ('windpark')" in text  # why it is hers
    assert f"#close {mine} reden" in text and f"#claim {mine}" in text  # commands ready to copy
    assert "4 werkdagen" in text  # how old
    stale_part = text[text.index("== Blijven liggen") : text.index("== Moet door een mens")]
    assert mine in stale_part
    acute_part = text[text.index("== Acute mails") : text.index("== Blijven liggen")]
    assert "els.vermeer@gemeente-voorbeeld.nl" in acute_part
    assert "verstuurd: automatisch antwoord aan els.vermeer@gemeente-voorbeeld.nl (sent)" in acute_part
    assert f"piketmelding aan {DEE}" in acute_part
    assert "noreply@meldingen.example" not in acute_part  # older than the last working day
    queue = text[text.index("== Niet toegewezen") : text.index("== Acute mails")]
    assert "kapot bericht" in queue
    human = text[text.index("== Moet door een mens") : text.index("== Cijfers")]
    assert "kapot bericht" in human and "550 5.1.1 mailbox unavailable" in human
    # HTML: styles inlined, everything from a mail escaped
    assert "<style" not in html and 'style="' in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_suppression_reason_of_an_unanswered_acute_mail_is_shown(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    _append(dovecot, mailbox_user, mails.acute(sender="noreply@meldingen.example", name="Meldsysteem"))
    service, engine = build_service(cfg, clock=FixedClock())
    service.run_once()
    service.digests.run()
    service.drain_outbox()
    engine.dispose()
    text = next(m for to, m in _digests(smtp_sink) if to == BOB).get_body(("plain",)).get_content()
    acute_part = text[text.index("== Acute mails") : text.index("== Blijven liggen")]
    assert "noreply@meldingen.example" in acute_part
    assert "geen automatisch antwoord: robot-sender" in acute_part


def test_one_digest_per_person_per_day_across_a_restart(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path, caplog
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    _append(dovecot, mailbox_user, mails.preparation())
    caplog.set_level(logging.INFO, logger="omo_mailbot.digest")
    for attempt in range(2):  # the service starts, catches up the day's digest, stops; then again
        service, engine = build_service(cfg, clock=FixedClock(TUESDAY + timedelta(hours=attempt)))
        runner = threading.Thread(target=service.run_forever, daemon=True)
        runner.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(_digests(smtp_sink)) < len(PRESENT):
            time.sleep(0.1)
        while time.monotonic() < deadline and len(_runs(caplog)) <= attempt:
            time.sleep(0.1)  # the start-up catch-up has run (and, the second time, found nothing to send)
        time.sleep(0.5)  # anything it queued would be sent by now
        service.state.stop.set()
        service.state.outbox_wake.set()
        runner.join(timeout=20)
        assert not runner.is_alive()
        engine.dispose()
    assert [sent for sent, _ in _runs(caplog)] == [len(PRESENT), 0]
    assert sorted(to for to, _ in _digests(smtp_sink)) == sorted(PRESENT)
    with db.session_factory(db.make_engine(cfg.database.url))() as s:
        assert s.scalar(select(func.count(DigestRun.id))) == len(PRESENT)


def _runs(caplog) -> list[tuple[int, int]]:
    """(sent, skipped) of each digest run the service logged."""
    return [(r.sent, r.skipped) for r in caplog.records if r.getMessage() == "digest run"]


def test_concurrent_runs_on_the_same_day_still_send_one_digest_each(make_config, tmp_path):
    cfg = make_config(extra=write_roster(tmp_path) + '[delivery]\nkind = "files"\n')
    services = [build_service(cfg, clock=FixedClock()) for _ in range(3)]
    threads = [threading.Thread(target=svc.digests.run) for svc, _ in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    with services[0][0].sessions() as s:
        assert s.scalar(select(func.count(DigestRun.id))) == len(PRESENT)
        assert s.scalar(select(func.count(OutboxMail.id)).where(OutboxMail.kind == "digest")) == len(PRESENT)
    for _, engine in services:
        engine.dispose()


def test_a_run_before_the_digest_time_waits_and_a_later_run_catches_up(make_config, tmp_path):
    cfg = make_config(extra=write_roster(tmp_path))
    clock = FixedClock(_local(2026, 12, 1, 7, 59))
    service, engine = build_service(cfg, clock=clock)
    early = service.digests.run()
    assert early.sent == [] and early.reason == "not yet 08:00"
    clock.now = _local(2026, 12, 1, 14, 30)  # the service was down at 08:00
    assert set(service.digests.run().sent) == PRESENT
    engine.dispose()


def test_no_digest_on_weekends_and_dutch_public_holidays(make_config, tmp_path):
    cfg = make_config(extra=write_roster(tmp_path) + '[digest]\nextra_days_off = ["2027-12-31"]\n')
    clock = FixedClock()
    service, engine = build_service(cfg, clock=clock)
    for day, why in [
        ((2027, 4, 27), "Koningsdag"),
        ((2027, 5, 6), "Hemelvaartsdag"),
        ((2028, 12, 26), "Tweede kerstdag"),
        ((2027, 12, 31), "extra vrije dag"),
        ((2027, 5, 8), "not a working day"),  # a Saturday
    ]:
        clock.now = _local(*day, 10)
        report = service.digests.run()
        assert report.sent == [] and why in report.reason, day
    clock.now = _local(2027, 4, 28, 10)  # the day after Koningsdag
    assert set(service.digests.run().sent) == {ADA, BOB, CAS, DEE}  # Cas is back from leave
    engine.dispose()


def test_the_scheduler_fires_at_the_digest_time_in_amsterdam():
    from omo_mailbot.config import DigestConfig

    calls: list[int] = []
    scheduler = DigestScheduler(lambda: calls.append(1), DigestConfig(time="08:00"))
    scheduler.start(catch_up=True)
    try:
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls == [1]  # the start-up catch-up ran once
        nxt = scheduler.next_run()
        assert (nxt.hour, nxt.minute, str(nxt.tzinfo)) == (8, 0, "Europe/Amsterdam")
    finally:
        scheduler.stop()


def test_preview_writes_every_digest_and_send_now_sends_once(make_config, tmp_path, capsys):
    outdir = tmp_path / "outgoing"
    extra = write_roster(tmp_path) + f'[delivery]\nkind = "files"\noutdir = "{outdir}"\n'
    make_config(extra=extra)
    config = str(tmp_path / "config.toml")
    assert cli.main(["--config", config, "digest", "--preview", str(tmp_path / "preview")]) == 0
    written = sorted(p.name for p in (tmp_path / "preview").iterdir())
    assert len(written) == 8 and "ada_bzk.example.html" in written and "ada_bzk.example.txt" in written
    assert not outdir.exists() or not list(outdir.iterdir())  # a preview sends nothing
    assert cli.main(["--config", config, "digest", "--send-now"]) == 0
    assert cli.main(["--config", config, "digest", "--send-now"]) == 0
    sent = list(outdir.iterdir())
    today_present = 4 if datetime.now(AMS).date() > datetime(2026, 12, 31).date() else 3
    assert len(sent) == today_present  # the second --send-now found today's digests already sent
    assert "already sent today" in capsys.readouterr().out


def test_one_persons_failing_digest_does_not_stop_the_others_and_a_later_run_sends_it(make_config, tmp_path):
    from sqlalchemy.exc import OperationalError

    cfg = make_config(extra=write_roster(tmp_path))
    service, engine = build_service(cfg, clock=FixedClock())
    builder = service.digests.builder
    real_context = builder.context
    failing = {ADA}

    def context(s, person, now):
        if person.address in failing:
            raise OperationalError("SELECT ...", {}, Exception("server closed the connection"))
        return real_context(s, person, now)

    builder.context = context  # type: ignore[method-assign]
    first = service.digests.run()
    assert set(first.sent) == PRESENT - {ADA} and [a for a, _ in first.failed] == [ADA]
    failing.clear()  # the database is back: the hourly retry of the same day
    assert service.digests.run().sent == [ADA]
    engine.dispose()


def test_the_scheduler_retries_every_hour_after_the_digest_time_until_six():
    from omo_mailbot.config import DigestConfig

    scheduler = DigestScheduler(lambda: None, DigestConfig(time="08:00"))
    assert scheduler.retry is not None
    fields = {f.name: str(f) for f in scheduler.retry.fields}
    assert (fields["hour"], fields["minute"]) == ("9-18", "0")


def test_a_roster_added_while_the_service_runs_gets_digests_without_a_restart(make_config, tmp_path, caplog):
    later = tmp_path / "later"
    later.mkdir()
    extra = f'[roster]\nroster_file = "{later / "roster.toml"}"\nrouting_file = "{later / "routing.toml"}"\n'
    cfg = make_config(extra=extra)
    clock = FixedClock()
    service, engine = build_service(cfg, clock=clock)
    assert service.digests is not None  # the scheduler starts even without a roster
    reloader = RuleReloader(cfg, service.sessions, service.pipeline, clock=clock, sleep=lambda _seconds: None)
    caplog.clear()
    service.run_digests()  # no roster yet: nothing to send, and no error
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    write_roster(later)  # the operator adds the roster; the reloader picks it up
    assert reloader.check().status == "reloaded"
    service.run_digests()
    with service.sessions() as s:
        assert set(s.scalars(select(DigestRun.person))) == PRESENT
    engine.dispose()
