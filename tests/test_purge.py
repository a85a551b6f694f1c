"""Retention: after privacy.retention_days the mail itself goes, the case and its history stay."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from omo_mailbot.cli import main
from omo_mailbot.models import Case, CaseEvent, Message, OutboxMail, Verdict
from omo_mailbot.purge import purge
from omo_mailbot.service import build_service

from . import mails
from .harness import ROOT, append_all

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


def _state(sessions):
    with sessions() as s:
        return (
            {m.message_id_header: m for m in s.execute(select(Message)).scalars()},
            list(s.execute(select(OutboxMail)).scalars()),
            len(s.execute(select(Case)).all()),
            len(s.execute(select(CaseEvent)).all()),
            len(s.execute(select(Verdict)).all()),
        )


def test_old_mail_bodies_are_purged_while_cases_and_recent_mail_stay(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path, capsys
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra="[privacy]\nretention_days = 30\n")
    append_all(dovecot, mailbox_user, [mails.acute(msgid="<oud@gemeente.example>")])
    old_service, engine = build_service(cfg, clock=lambda: NOW - timedelta(days=40))
    old_service.run_once()
    engine.dispose()
    append_all(dovecot, mailbox_user, [mails.preparation(msgid="<nieuw@gemeente.example>")])
    service, engine = build_service(cfg, clock=lambda: NOW)
    service.run_once()
    before = _state(service.sessions)

    dry = purge(service.sessions, cfg.privacy.retention_days, NOW, dry_run=True)
    assert (dry.messages, dry.outbox) == (1, 2)  # the old mail, its reply and its duty alert
    assert _state(service.sessions)[0]["<oud@gemeente.example>"].raw is not None  # a dry run changes nothing

    report = purge(service.sessions, cfg.privacy.retention_days, NOW)
    assert (report.messages, report.outbox) == (1, 2)
    msgs, outbox, n_cases, n_events, n_verdicts = _state(service.sessions)
    old, new = msgs["<oud@gemeente.example>"], msgs["<nieuw@gemeente.example>"]
    assert old.raw is None and old.new_text is None and old.stripped_text is None and old.purged_at is not None
    assert old.subject and old.case_id  # metadata stays
    assert new.raw is not None and new.new_text  # younger than the retention period
    assert all(r.raw == b"" for r in outbox if r.status == "sent")
    assert (n_cases, n_events, n_verdicts) == before[2:]  # cases, their history and the verdicts stay
    assert purge(service.sessions, cfg.privacy.retention_days, NOW).messages == 0  # idempotent
    engine.dispose()
    capsys.readouterr()
    assert main(["--config", str(tmp_path / "config.toml"), "explain", "--message-id", "<oud@gemeente.example>"]) == 1
    assert f"its body was purged on {NOW:%Y-%m-%d}" in capsys.readouterr().err


def test_pending_outgoing_mail_is_never_purged(make_config):
    cfg = make_config()
    from omo_mailbot.outbox import enqueue
    from omo_mailbot.service import open_database

    engine, sessions = open_database(cfg)
    with sessions.begin() as s:
        enqueue(
            s,
            kind="duty_alert",
            raw=b"nog te versturen",
            recipient="x@y.example",
            message_id="<p@x>",
            now=NOW - timedelta(days=4000),
        )
    assert purge(sessions, 30, NOW).outbox == 0
    with sessions() as s:
        assert s.execute(select(OutboxMail.raw)).scalar_one() == b"nog te versturen"
    engine.dispose()


def test_the_purge_command_reports_what_it_would_remove(make_config, tmp_path):
    make_config()
    result = subprocess.run(
        [sys.executable, "-m", "omo_mailbot.cli", "--config", str(tmp_path / "config.toml"), "purge", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    assert "would purge the bodies of 0 received mails" in result.stdout


def test_the_service_purges_once_a_day(make_config, caplog):
    import logging

    cfg = make_config(extra='[source]\nkind = "maildir"\n[delivery]\nkind = "files"\n')
    clock = [NOW]
    service, engine = build_service(cfg, clock=lambda: clock[0])
    caplog.set_level(logging.INFO, logger="omo_mailbot.purge")

    def runs() -> int:
        return sum(1 for r in caplog.records if r.name == "omo_mailbot.purge")

    service.purge_if_due()
    assert runs() == 1  # at start-up
    clock[0] = NOW + timedelta(hours=23)
    service.purge_if_due()
    assert runs() == 1  # not again the same day
    clock[0] = NOW + timedelta(days=1, minutes=1)
    service.purge_if_due()
    assert runs() == 2
    engine.dispose()
