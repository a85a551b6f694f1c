"""Acting on cases by mail: every command, the refusals, and exactly one reply per command mail.

Cases are made by the real service from mails in a Dovecot mailbox; a contact
person then mails commands to the same mailbox; the replies arrive at aiosmtpd.
"""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from omo_mailbot import cli, db
from omo_mailbot.commands import authentication_problem, find_commands, mail_commands
from omo_mailbot.mail import parse
from omo_mailbot.models import Case, CaseEvent, Relabel, Verdict
from omo_mailbot.service import build_service
from omo_mailbot.templating import Templates
from omo_mailbot.text import own_text

from . import mails
from .rosterkit import ADA, AUTH_FAIL, AUTH_OK, BOB, DEE, ROSTER, FixedClock, write_roster

ROOT = Path(__file__).resolve().parent.parent


def _append(dovecot, user, *raws: bytes) -> None:
    c = dovecot.client(user)
    for raw in raws:
        c.append("INBOX", raw)
    c.logout()


def _run(cfg) -> None:
    service, engine = build_service(cfg, clock=FixedClock())
    service.run_once()
    engine.dispose()


def _session(cfg):
    engine = db.make_engine(cfg.database.url)
    return engine, db.session_factory(engine)()


def _command_mail(
    body: str, *, sender: str = ADA, auth: str | None = AUTH_OK, subject: str = "Re: Omo-digest"
) -> bytes:
    headers = {"Authentication-Results": auth.format(domain=sender.split("@")[1])} if auth else {}
    return mails.make_mail(body, subject=subject, sender=sender, name="Contactpersoon", headers=headers)


def _replies_to(sink, address: str) -> list[str]:
    out = []
    for m in sink.messages:
        if address in m.rcpt_tos:
            msg = email.message_from_bytes(m.content, policy=policy.default)
            if msg["Auto-Submitted"] == "auto-replied":
                out.append(msg.get_body(("plain",)).get_content())
    return out


def _three_cases(dovecot, user, cfg) -> list[str]:
    _append(dovecot, user, *(mails.preparation(subject=f"Advies windpark {i}") for i in range(3)))
    _run(cfg)
    engine, s = _session(cfg)
    refs = list(s.scalars(select(Case.reference).order_by(Case.id)))
    s.close()
    engine.dispose()
    return refs


def test_every_command_is_carried_out_and_answered_once(dovecot, mailbox_user, smtp_sink, make_config, tmp_path):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    one, two, three = _three_cases(dovecot, mailbox_user, cfg)
    first = (
        f"Goedemorgen,\n\n#claim {two}\n#assign {one} {DEE}\n#refer {three} Expertise-unit Sociale Stabiliteit\n"
        f"#acute {one}\n\nGroet, Ada\n\n> #close {one} reden\n> #close {three} reden\n"
    )
    _append(dovecot, mailbox_user, _command_mail(first))
    _run(cfg)
    _append(dovecot, mailbox_user, _command_mail(f"#close {two} opgelost per telefoon"))
    _run(cfg)

    replies = _replies_to(smtp_sink, ADA)
    assert len(replies) == 2  # one per command mail
    assert f"gedaan: {two} is nu van u (in behandeling)" in replies[0]
    assert f"gedaan: {one} is toegewezen aan Dee Smit <{DEE}>" in replies[0]
    assert f"gedaan: {three} is doorverwezen naar Expertise-unit Sociale Stabiliteit" in replies[0]
    assert f"gedaan: {one} heeft nu het label acute" in replies[0]
    assert f"gedaan: {two} is gesloten: opgelost per telefoon" in replies[1]
    engine, s = _session(cfg)
    cases = {c.reference: c for c in s.scalars(select(Case))}
    assert len(cases) == 3  # command mails never become cases
    assert (cases[one].assignee, cases[one].status, cases[one].label) == (DEE, "assigned", "acute")
    assert (cases[two].assignee, cases[two].status) == (ADA, "closed")
    assert (cases[three].status, cases[three].referred_to) == ("referred", "Expertise-unit Sociale Stabiliteit")
    assert s.scalar(select(func.count(Relabel.id)).where(Relabel.label == "acute", Relabel.actor == ADA)) == 1
    closed = s.scalar(select(CaseEvent).where(CaseEvent.action == "closed"))
    assert closed is not None and closed.actor == ADA and closed.detail == "opgelost per telefoon"
    s.close()
    engine.dispose()


def test_refused_commands_change_nothing_and_say_why(dovecot, mailbox_user, smtp_sink, make_config, tmp_path):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    one, _, _ = _three_cases(dovecot, mailbox_user, cfg)
    _append(
        dovecot,
        mailbox_user,
        _command_mail(f"#close {one} klaar", auth=None),  # no Authentication-Results at all
        _command_mail(f"#close {one} klaar", sender=BOB, auth=AUTH_FAIL),  # DKIM and DMARC failed
    )
    _run(cfg)
    _append(
        dovecot,
        mailbox_user,
        _command_mail(f"#close OMO-2026-9999 klaar\n#assign {one} stranger@elders.example\n#refer {one}"),
    )
    _run(cfg)
    outsider = "burger@gemeente-voorbeeld.nl"
    _append(dovecot, mailbox_user, _command_mail(f"#close {one} klaar", sender=outsider))
    _run(cfg)

    (no_header,) = _replies_to(smtp_sink, ADA)[:1]
    assert "niet gedaan: geen Authentication-Results-kop" in no_header
    (failed,) = _replies_to(smtp_sink, BOB)
    assert "niet gedaan: geen DKIM- of DMARC-pass voor bzk.example" in failed
    unknown = _replies_to(smtp_sink, ADA)[1]
    assert "niet gedaan: er is geen zaak OMO-2026-9999" in unknown
    assert "niet gedaan: stranger@elders.example is geen contactpersoon op het rooster" in unknown
    assert "niet gedaan: zeg naar wie" in unknown
    assert len(_replies_to(smtp_sink, ADA)) == 2
    assert _replies_to(smtp_sink, outsider) == []  # not on the roster: no command reply, no auto-reply
    engine, s = _session(cfg)
    case = s.scalar(select(Case).where(Case.reference == one))
    assert case is not None and case.status != "closed" and case.referred_to is None
    ignored = s.scalar(select(CaseEvent).where(CaseEvent.action == "commands-ignored"))
    assert ignored is not None  # the outsider's mail became an ordinary case, its command lines noted
    s.close()
    engine.dispose()


def test_the_authentication_check_can_be_switched_off_for_test_setups(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    extra = write_roster(tmp_path) + "[digest]\nrequire_authenticated_commands = false\n"
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=extra)
    one, _, _ = _three_cases(dovecot, mailbox_user, cfg)
    _append(dovecot, mailbox_user, _command_mail(f"#close {one} dubbel", auth=None))
    _run(cfg)
    (reply,) = _replies_to(smtp_sink, ADA)
    assert f"gedaan: {one} is gesloten: dubbel" in reply


def test_a_command_without_a_reference_acts_on_the_case_the_mail_replies_to():
    raw = mails.make_mail("#claim\n", sender=ADA, headers={"Authentication-Results": AUTH_OK.format(domain="x")})
    (command,) = find_commands(parse(raw).text_plain)
    assert command.verb == "claim" and command.reference is None


def _forwarded_digest(claim: str, close: str, refer: str) -> str:
    return (
        f"#claim {claim}\n\n"
        "Van: Omo <Omo@minbzk.nl>\nVerzonden: dinsdag 1 december 2026 08:00\nAan: Ada Bakker <ada@bzk.example>\n"
        f"Onderwerp: Omo-digest\n\nUw zaken\n  {close} Advies windpark\n    #claim {close}\n"
        f"    #close {close} reden\n  {refer} Advies windpark\n    #refer {refer} Expertise-unit Sociale Stabiliteit\n"
    )


def test_a_forwarded_digest_commands_only_the_lines_above_it():
    body = _forwarded_digest("OMO-2026-0001", "OMO-2026-0002", "OMO-2026-0003")
    (command,) = find_commands(own_text(body))
    assert (command.verb, command.reference) == ("claim", "OMO-2026-0001")
    raw = _command_mail(body, subject="FW: Omo-digest")
    assert [c.line for c in mail_commands(parse(raw))] == ["#claim OMO-2026-0001"]


def test_a_forwarded_digest_does_not_carry_out_its_ready_made_commands(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    one, two, three = _three_cases(dovecot, mailbox_user, cfg)
    _append(dovecot, mailbox_user, _command_mail(_forwarded_digest(one, two, three), subject="FW: Omo-digest"))
    _run(cfg)
    (reply,) = _replies_to(smtp_sink, ADA)
    assert f"gedaan: {one} is nu van u (in behandeling)" in reply
    assert f"gedaan: {two} is" not in reply.replace("niet gedaan", "") and "doorverwezen" not in reply
    engine, s = _session(cfg)
    cases = {c.reference: c for c in s.scalars(select(Case))}
    assert (cases[one].assignee, cases[one].status) == (ADA, "in_progress")
    assert cases[two].status != "closed" and cases[two].assignee != ADA
    assert cases[three].status != "referred" and cases[three].referred_to is None
    s.close()
    engine.dispose()


def test_only_the_topmost_authentication_results_counts():
    forged_below = (
        b"Authentication-Results: mx.omo.test; dkim=fail header.d=bzk.example\r\n"
        b"Authentication-Results: attacker.example; dkim=pass header.d=bzk.example\r\n"
        b"From: Ada <ada@bzk.example>\r\nSubject: x\r\n\r\n#claim OMO-2026-0001\r\n"
    )
    assert (
        authentication_problem(parse(forged_below), [])
        == "geen DKIM- of DMARC-pass voor bzk.example in Authentication-Results"
    )
    good = forged_below.replace(b"dkim=fail", b"dmarc=pass header.from=bzk.example; dkim=fail", 1)
    assert authentication_problem(parse(good), []) is None
    assert "geen vertrouwde server" in (authentication_problem(parse(good), ["mx.minbzk.nl"]) or "")
    other_domain = good.replace(b"header.from=bzk.example", b"header.from=elders.example", 1)
    assert authentication_problem(parse(other_domain), []) is not None
    parent = forged_below.replace(b"dkim=fail header.d=bzk.example", b"dkim=pass header.d=mail.bzk.example", 1)
    assert authentication_problem(parse(parent), []) is None  # relaxed alignment: same organisational domain
    bare_tld = forged_below.replace(b"dkim=fail header.d=bzk.example", b"dkim=pass header.d=example", 1)
    assert authentication_problem(parse(bare_tld), []) is not None


def test_the_absence_note_on_a_hand_assignment_uses_the_local_date(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    dee_block = 'organisation = "NGB"\ncapacity = 5\n'
    assert dee_block in ROSTER
    away = dee_block + 'absences = [{ from = 2026-12-02, to = 2026-12-04, reason = "cursus" }]\n'
    roster = ROSTER.replace(dee_block, away)
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path, roster))
    one, _, _ = _three_cases(dovecot, mailbox_user, cfg)
    _append(dovecot, mailbox_user, _command_mail(f"#assign {one} {DEE}"))
    # 23:30 UTC on Tuesday 1 December is 00:30 on Wednesday in Amsterdam (winter time): Dee's first day away
    service, engine = build_service(cfg, clock=FixedClock(datetime(2026, 12, 1, 23, 30, tzinfo=UTC)))
    service.run_once()
    engine.dispose()
    (reply,) = _replies_to(smtp_sink, ADA)
    assert f"{one} is toegewezen aan Dee Smit <{DEE}>; let op: Dee Smit is afwezig tot en met 2026-12-04" in reply


def test_the_command_line_does_what_the_mail_commands_do(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path, capsys
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    one, two, _ = _three_cases(dovecot, mailbox_user, cfg)
    config = str(tmp_path / "config.toml")
    assert cli.main(["--config", config, "cases", "assign", one, DEE, "--as", "operator"]) == 0
    assert cli.main(["--config", config, "cases", "close", two, "dubbel", "--as", "operator"]) == 0
    assert cli.main(["--config", config, "cases", "relabel", one, "acute", "--as", "operator"]) == 0
    assert cli.main(["--config", config, "cases", "assign", one, "stranger@elders.example"]) == 1
    assert cli.main(["--config", config, "cases", "show", one]) == 0
    out = capsys.readouterr().out
    assert f"{one} is toegewezen aan Dee Smit" in out and "is geen contactpersoon op het rooster" in out
    assert "operator" in out and "relabelled" in out
    assert cli.main(["--config", config, "cases", "list"]) == 0
    listing = capsys.readouterr().out
    assert two not in listing and one in listing  # closed cases only with --all


def test_a_contact_person_is_never_auto_replied(dovecot, mailbox_user, smtp_sink, make_config, tmp_path):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    _append(dovecot, mailbox_user, mails.acute(sender=ADA, name="Ada Bakker"))  # no command lines: an ordinary mail
    _run(cfg)
    assert _replies_to(smtp_sink, ADA) == []
    engine, s = _session(cfg)
    verdict = s.scalar(select(Verdict))
    assert verdict is not None and verdict.label == "acute" and verdict.auto_reply is False
    assert "roster-address" in (verdict.auto_reply_blocked_by or "")
    assert s.scalar(select(func.count(Case.id))) == 1
    s.close()
    engine.dispose()


@pytest.mark.parametrize(
    ("done", "refused", "summary"),
    [
        (1, 0, "Uw opdracht is uitgevoerd:"),
        (3, 0, "Uw opdrachten zijn uitgevoerd:"),
        (0, 1, "Uw opdracht is niet uitgevoerd:"),
        (0, 2, "Uw opdrachten zijn niet uitgevoerd:"),
        (1, 2, "Van uw 3 opdrachten is er 1 uitgevoerd en 2 niet:"),
        (2, 1, "Van uw 3 opdrachten zijn er 2 uitgevoerd en 1 niet:"),
    ],
)
def test_the_answer_to_a_command_mail_counts_in_correct_dutch(done, refused, summary):
    results = [{"line": f"sluit OMO-2026-000{i}", "done": i < done, "text": "x"} for i in range(done + refused)]
    text = Templates(ROOT / "templates").render_text(
        "command_reply.txt", {"name": "Ada", "results": results, "done": done, "refused": refused}
    )
    assert text.splitlines()[2] == summary


def test_forged_command_mails_cannot_flood_a_contact_person_with_answers(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    from omo_mailbot.commands import MAX_ANSWERS_PER_HOUR

    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    forged = [_command_mail(f"#close OMO-2026-{i:04d} weg", auth=None) for i in range(MAX_ANSWERS_PER_HOUR + 3)]
    _append(dovecot, mailbox_user, *forged)
    _run(cfg)
    assert len(_replies_to(smtp_sink, ADA)) == MAX_ANSWERS_PER_HOUR
    engine, s = _session(cfg)
    assert s.scalar(select(func.count(Case.id))) == 0  # refused, and none of them became a case
    s.close()
    engine.dispose()
