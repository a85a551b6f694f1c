"""Reload without restart: valid rules are swapped in, broken ones are refused with one operator alert."""

from __future__ import annotations

import email
import threading
import time
from datetime import UTC, datetime
from email import policy

import pytest
from sqlalchemy import func, select

from omo_mailbot.mailbox import FetchedMail
from omo_mailbot.models import Message, OutboxMail, Verdict
from omo_mailbot.reload import ALERT_KIND, RuleReloader
from omo_mailbot.rules import load_rules
from omo_mailbot.service import ServiceState, build_service

from . import mails, stored_mail

OPERATOR = "beheer@omo.example"
FORCE_WIND = """\
[[rule]]
symbol = "WIND_FARM_CONFLICT"
description = "Wind farm conflicts are acute for now"
weight = 0.5
words = ["windpark*"]
force = "acute"
"""
BROKEN = FORCE_WIND.replace('words = ["windpark*"]', "regex = ['(a|aa)+windpark']")


def _alerts(sessions) -> list[OutboxMail]:
    with sessions() as s:
        return list(s.execute(select(OutboxMail).where(OutboxMail.kind == ALERT_KIND)).scalars())


def _wait(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# --- the reloader on its own ------------------------------------------------------------


@pytest.fixture
def reloader_setup(tmp_path, make_config):
    rules = stored_mail.copy_rules(tmp_path, "rules")
    box = stored_mail.make_maildir(tmp_path / "Maildir", [])
    extra = f'[paths]\nrules_dir = "{rules}"\n[alerts]\noperator_address = "{OPERATOR}"\n'
    cfg = stored_mail.maildir_config(make_config, tmp_path, box, extra)
    service, engine = build_service(cfg)
    reloader = RuleReloader(
        cfg, service.sessions, service.pipeline, clock=lambda: datetime.now(UTC), sleep=lambda _seconds: None
    )
    yield rules, service, reloader
    engine.dispose()


def test_an_unchanged_directory_changes_nothing(reloader_setup):
    _, service, reloader = reloader_setup
    before = service.pipeline.decider
    assert reloader.check().status == "unchanged"
    assert reloader.check(forced=True).status == "unchanged"  # SIGHUP with nothing new
    assert service.pipeline.decider is before


def test_a_valid_change_is_swapped_in_as_a_new_decider(reloader_setup):
    rules, service, reloader = reloader_setup
    old = service.pipeline.decider
    old_hash = old.rules.hash
    (rules / "wind.toml").write_text(FORCE_WIND)
    result = reloader.check()
    assert result.status == "reloaded"
    new = service.pipeline.decider
    assert new is not old and old.rules.hash == old_hash  # the old Decider was never mutated
    assert new.rules.hash == load_rules(rules).hash != old_hash
    assert "WIND_FARM_CONFLICT" in new.rules.symbols
    assert new.model is old.model and new.threshold == old.threshold
    assert reloader.check().status == "unchanged"


def test_a_broken_change_keeps_the_running_rules_and_alerts_once(reloader_setup):
    rules, service, reloader = reloader_setup
    running = service.pipeline.decider
    (rules / "wind.toml").write_text(BROKEN)
    first = reloader.check()
    assert first.status == "rejected" and first.alerted
    assert service.pipeline.decider is running
    for _ in range(3):  # polls and SIGHUPs of the same broken version: no second alert
        assert reloader.check().alerted is False
        assert reloader.check(forced=True).alerted is False
    (alert,) = _alerts(service.sessions)
    assert alert.recipient == OPERATOR and alert.status == "pending"
    msg = email.message_from_bytes(alert.raw, policy=policy.default)
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_content()
    assert f"{rules / 'wind.toml'}:5: rule[0](WIND_FARM_CONFLICT).regex[0]: regular expression can backtrack" in body
    assert running.rules.hash[:12] in body

    (rules / "wind.toml").write_text(BROKEN.replace("(a|aa)+", "(x+)+"))  # another broken version
    assert reloader.check().alerted is True
    assert len(_alerts(service.sessions)) == 2

    (rules / "wind.toml").write_text(FORCE_WIND)  # fixed: swapped in
    assert reloader.check().status == "reloaded"
    assert "WIND_FARM_CONFLICT" in service.pipeline.decider.rules.symbols


def test_a_broken_roster_is_refused_like_broken_rules(reloader_setup, tmp_path):
    _, service, reloader = reloader_setup
    running = service.pipeline.decider
    roster = reloader.roster_file
    assert roster is not None and not roster.exists()
    roster.parent.mkdir(parents=True, exist_ok=True)
    roster.write_text('[[person]]\nname = "Anna"\naddress = "anna@omo.example"\norganisation = "ABC"\n')
    result = reloader.check()
    assert result.status == "rejected" and result.alerted
    assert [str(p) for p in result.problems] == [
        f"{roster}:4: person[0].organisation: expected one of BZK, JenV, SZW, VNG, NGB, got 'ABC'"
    ]
    assert service.pipeline.decider is running and service.pipeline.roster is None

    roster.write_text('[[person]]\nname = "Anna"\naddress = "anna@omo.example"\norganisation = "BZK"\n')
    assert reloader.check().status == "reloaded"
    assert service.pipeline.roster is not None and service.pipeline.roster.addresses == ["anna@omo.example"]
    assert "anna@omo.example" in service.pipeline.decider.policy.roster_addresses


def test_a_roster_that_disappears_while_running_is_kept_and_the_operator_told(reloader_setup):
    _, service, reloader = reloader_setup
    roster = reloader.roster_file
    assert roster is not None
    roster.parent.mkdir(parents=True, exist_ok=True)
    roster.write_text('[[person]]\nname = "Anna"\naddress = "anna@omo.example"\norganisation = "BZK"\n')
    assert reloader.check().status == "reloaded"
    roster.unlink()  # an editor saving by delete-and-recreate, or a slip
    result = reloader.check()
    assert result.status == "rejected" and result.alerted
    assert "the roster file is gone; the running roster stays" in str(result.problems[0])
    assert service.pipeline.roster is not None  # contact persons stay protected from the officials' guidance
    assert "anna@omo.example" in service.pipeline.decider.policy.roster_addresses


def test_a_file_caught_half_saved_is_judged_again_not_alerted(reloader_setup):
    rules, service, reloader = reloader_setup
    running = service.pipeline.decider
    (rules / "wind.toml").write_text(FORCE_WIND[:40])  # the editor has written the first 40 bytes

    def editor_finishes(_seconds: float) -> None:
        (rules / "wind.toml").write_text(FORCE_WIND)

    reloader.sleep = editor_finishes
    assert reloader.check().status == "settling"
    assert service.pipeline.decider is running and _alerts(service.sessions) == []
    reloader.sleep = lambda _seconds: None
    assert reloader.check().status == "reloaded"
    assert "WIND_FARM_CONFLICT" in service.pipeline.decider.rules.symbols


def test_the_alert_is_queued_once_even_by_a_second_instance(reloader_setup):
    """The alert's Message-ID comes from the broken version's hash: the outbox's unique index dedupes."""
    rules, service, reloader = reloader_setup
    other = RuleReloader(
        reloader.cfg, service.sessions, service.pipeline, clock=lambda: datetime.now(UTC), settle_seconds=0
    )
    (rules / "wind.toml").write_text(BROKEN)
    assert reloader.check().alerted is True
    assert other.check().alerted is False
    assert len(_alerts(service.sessions)) == 1


# --- the running service ----------------------------------------------------------------


def _append(dovecot, user, raw: bytes) -> None:
    c = dovecot.client(user)
    c.append("INBOX", raw)
    c.logout()


def _verdict(service, message_id: str) -> Verdict | None:
    with service.sessions() as s:
        return s.execute(
            select(Verdict)
            .join(Message, Message.id == Verdict.message_id)
            .where(Message.message_id_header == message_id)
        ).scalar_one_or_none()


@pytest.mark.integration
def test_a_running_service_swaps_valid_rules_keeps_answering_and_refuses_broken_ones(
    tmp_path, dovecot, mailbox_user, smtp_sink, make_config
):
    rules = stored_mail.copy_rules(tmp_path, "rules")
    extra = (
        f'[paths]\nrules_dir = "{rules}"\n[alerts]\noperator_address = "{OPERATOR}"\n'
        "[service]\nrules_reload_seconds = 0.2\n"
    )
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=extra)
    state = ServiceState()
    service, engine = build_service(cfg, state=state)
    first_hash = service.pipeline.decider.rules.hash
    runner = threading.Thread(target=service.run_forever, daemon=True)
    runner.start()

    def replies_to(address: str) -> int:
        return sum(1 for m in smtp_sink.messages if address in m.rcpt_tos)

    try:
        # 1. the shipped rules: a preparation mail about a wind farm gets no answer
        before = mails.preparation(sender="ruud@gemeente-a.nl", msgid="<before@gemeente-a.nl>")
        _append(dovecot, mailbox_user, before)
        assert _wait(lambda: _verdict(service, "<before@gemeente-a.nl>") is not None)
        assert _verdict(service, "<before@gemeente-a.nl>").rules_hash == first_hash

        # 2. a valid change is picked up without a restart; the next such mail is acute and answered
        (rules / "wind.toml").write_text(FORCE_WIND)
        new_hash = load_rules(rules).hash
        assert _wait(lambda: service.pipeline.decider.rules.hash == new_hash), "the valid rules were not swapped in"
        _append(dovecot, mailbox_user, mails.preparation(sender="mia@gemeente-b.nl", msgid="<after@gemeente-b.nl>"))
        assert _wait(lambda: replies_to("mia@gemeente-b.nl") == 1)
        verdict = _verdict(service, "<after@gemeente-b.nl>")
        assert verdict.label == "acute" and verdict.rules_hash == new_hash

        # 3. a broken change: one alert to the operator, and the last good rules keep answering
        (rules / "wind.toml").write_text(BROKEN)
        assert _wait(lambda: replies_to(OPERATOR) == 1), "no operator alert for the broken rules"
        _append(dovecot, mailbox_user, mails.preparation(sender="noor@gemeente-c.nl", msgid="<broken@gemeente-c.nl>"))
        assert _wait(lambda: replies_to("noor@gemeente-c.nl") == 1)
        assert _verdict(service, "<broken@gemeente-c.nl>").rules_hash == new_hash
        state.reload.set()  # what SIGHUP does
        time.sleep(1.0)  # five more polls and the SIGHUP: still the one alert
        assert replies_to(OPERATOR) == 1
        alert = email.message_from_bytes(
            next(m.content for m in smtp_sink.messages if OPERATOR in m.rcpt_tos), policy=policy.default
        )
        assert alert["Auto-Submitted"] == "auto-generated"
        assert f"{rules / 'wind.toml'}:5: rule[0](WIND_FARM_CONFLICT).regex[0]" in alert.get_content()
    finally:
        state.stop.set()
        state.outbox_wake.set()
        runner.join(timeout=10)
    assert not runner.is_alive(), "the service did not stop within 10 s"
    with service.sessions() as s:
        assert s.execute(select(func.count()).select_from(Verdict)).scalar_one() == 3
    engine.dispose()


def test_a_reload_waits_for_the_mail_in_hand_so_it_sees_one_setup(make_config):
    """Decider, roster and routing are replaced together, never while a mail is being processed."""
    service, engine = build_service(make_config())
    pipeline = service.pipeline
    old = pipeline.decider
    new = old.with_rules(old.rules, old.policy)
    swapper: list[threading.Thread] = []
    blocked: list[bool] = []

    class Reloading(type(old)):  # a reload arrives while this mail is being decided
        def decide(self, mail, *, explain=False):
            thread = threading.Thread(target=pipeline.replace_setup, args=(new, None, None), daemon=True)
            thread.start()
            thread.join(timeout=0.3)
            blocked.append(thread.is_alive())
            swapper.append(thread)
            return super().decide(mail, explain=explain)

    pipeline.decider = Reloading(
        old.rules, old.model, old.policy, threshold=old.threshold, model_weight=old.model_weight
    )
    raw = mails.acute()
    outcome = pipeline.process("INBOX-test", 7, FetchedMail(1, raw, len(raw)))
    assert outcome.status == "decided"
    assert blocked == [True]  # the swap waited for the mail in hand
    swapper[0].join(timeout=10)
    assert not swapper[0].is_alive()
    assert pipeline.decider is new and pipeline.roster is None
    engine.dispose()


def test_a_change_saved_while_the_service_starts_is_picked_up_at_the_first_check(tmp_path, make_config):
    rules = stored_mail.copy_rules(tmp_path, "rules")
    box = stored_mail.make_maildir(tmp_path / "Maildir", [])
    cfg = stored_mail.maildir_config(make_config, tmp_path, box, f'[paths]\nrules_dir = "{rules}"\n')
    service, engine = build_service(cfg)
    assert service.built_from is not None
    (rules / "wind.toml").write_text(FORCE_WIND)  # saved after the rules were read, before the reloader runs

    def reloader(**kwargs):
        return RuleReloader(cfg, service.sessions, service.pipeline, clock=lambda: datetime.now(UTC), **kwargs)

    # a reloader that took the files on disk for the ones in use would never see this change
    assert reloader(sleep=lambda _s: None).check().status == "unchanged"
    assert "WIND_FARM_CONFLICT" not in service.pipeline.decider.rules.symbols
    assert reloader(sleep=lambda _s: None, built_from=service.built_from).check().status == "reloaded"
    assert "WIND_FARM_CONFLICT" in service.pipeline.decider.rules.symbols
    engine.dispose()
