"""Assignment of new cases: eligible by topic, presence and capacity; then fewest open cases, round robin.

Through the whole service: mails are appended to a real Dovecot mailbox, the
service reads them, routes and assigns each new case, and the duty alert goes to
whoever the roster has on duty (via aiosmtpd).
"""

from __future__ import annotations

from sqlalchemy import select

from omo_mailbot import db
from omo_mailbot.models import Case, CaseEvent, Message, Verdict
from omo_mailbot.service import build_service

from . import mails
from .rosterkit import ADA, BOB, CAS, DEE, PIKET, ROSTER, FixedClock, write_roster

THREAT_BODY = (
    "Beste mensen,\n\nOnze wethouder wordt sinds het raadsbesluit bedreigd via sociale media en per post. "
    "Kunnen jullie ons adviseren over de aanpak en over aangifte?\n\nMet vriendelijke groet,\nPetra Smit\n"
)


def _append(dovecot, user, *raws: bytes) -> None:
    c = dovecot.client(user)
    for raw in raws:
        c.append("INBOX", raw)
    c.logout()


def _run(cfg, clock) -> None:
    service, engine = build_service(cfg, clock=clock)
    service.run_once()
    engine.dispose()


def _cases(cfg) -> list[Case]:
    engine = db.make_engine(cfg.database.url)
    with db.session_factory(engine)() as s:
        rows = list(s.execute(select(Case).order_by(Case.id)).scalars())
    engine.dispose()
    return rows


def test_capacity_fills_up_in_turn_and_then_cases_wait_unassigned(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    for i in range(4):  # four wind farm questions; Ada takes 2 open cases at most, Bob 1
        _append(dovecot, mailbox_user, mails.preparation(subject=f"Advies windpark {i}"))
        _run(cfg, FixedClock())
    assignees = [c.assignee for c in _cases(cfg)]
    # round robin on a tie (nobody has a case: roster order), then fewest open cases, then capacity
    assert assignees == [ADA, BOB, ADA, None]
    engine = db.make_engine(cfg.database.url)
    with db.session_factory(engine)() as s:
        last = s.execute(select(Case).order_by(Case.id.desc()).limit(1)).scalar_one()
        events = {e.action: e.detail for e in s.scalars(select(CaseEvent).where(CaseEvent.case_id == last.id))}
        verdict = s.execute(select(Verdict).order_by(Verdict.id.desc()).limit(1)).scalar_one()
    engine.dispose()
    assert last.status == "new" and last.topics == ["energy"]
    assert "vol (2 van 2 open)" in events["unassigned"] and "vol (1 van 1 open)" in events["unassigned"]
    assert "WIND" in events["routed"] and "windpark" in events["routed"]
    assert verdict.topics[0]["topic"] == "energy" and verdict.topics[0]["signals"][0]["symbol"] == "WIND"


def test_a_closed_case_frees_capacity(dovecot, mailbox_user, smtp_sink, make_config, tmp_path):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    for i in range(3):
        _append(dovecot, mailbox_user, mails.preparation(subject=f"Advies windpark {i}"))
    _run(cfg, FixedClock())
    engine = db.make_engine(cfg.database.url)
    with db.session_factory(engine).begin() as s:
        first = s.execute(select(Case).where(Case.assignee == ADA).order_by(Case.id)).scalars().first()
        assert first is not None
        first.status = "closed"
    engine.dispose()
    _append(dovecot, mailbox_user, mails.preparation(subject="Advies windpark 3"))
    _run(cfg, FixedClock())
    assert _cases(cfg)[-1].assignee == ADA  # 1 open of 2 again; Bob stays full


def test_an_absent_person_gets_no_case_and_no_duty_alert(dovecot, mailbox_user, smtp_sink, make_config, tmp_path):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    _append(dovecot, mailbox_user, mails.make_mail(THREAT_BODY, subject="Bedreiging wethouder"), mails.acute())
    _run(cfg, FixedClock())  # 1 December: Cas is on leave until 31 December
    threat, acute = _cases(cfg)
    assert threat.topics == ["threats"] and threat.assignee == DEE
    alerts = [m for m in smtp_sink.messages if "Auto-Submitted: auto-generated" in m.content.decode(errors="replace")]
    assert [m.rcpt_tos for m in alerts] == [[DEE]]  # on duty around the clock: Cas and Dee, Cas absent
    assert acute.assignee is None  # no topic recognised: the unassigned queue


def test_nobody_eligible_for_a_topic_leaves_the_case_unassigned_with_the_reason(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    body = "Goedemiddag,\n\nIn het voorjaar opent een azc in ons dorp. Hoe bereiden we de bewonersavond voor?\n"
    _append(dovecot, mailbox_user, mails.make_mail(body, subject="Bewonersavond"))
    _run(cfg, FixedClock())
    (case,) = _cases(cfg)
    assert case.topics == ["asylum"] and case.assignee is None
    engine = db.make_engine(cfg.database.url)
    with db.session_factory(engine)() as s:
        detail = s.execute(
            select(CaseEvent.detail).where(CaseEvent.case_id == case.id, CaseEvent.action == "unassigned")
        ).scalar_one()
    engine.dispose()
    assert f"{CAS}: afwezig tot en met 2026-12-31" in detail


def test_without_a_roster_alerts_go_to_the_configured_duty_address(dovecot, mailbox_user, smtp_sink, make_config):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)  # no roster file next to the config
    _append(dovecot, mailbox_user, mails.acute())
    _run(cfg, FixedClock())
    assert any(m.rcpt_tos == ["dienst@omo.example"] for m in smtp_sink.messages)
    assert _cases(cfg)[0].assignee is None


def test_follow_ups_join_their_case_and_a_follow_up_reopens_a_closed_one(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    first_id = "<eerste-vraag@gemeente-voorbeeld.nl>"
    _append(dovecot, mailbox_user, mails.preparation(subject="Advies windpark Hooge Veld", msgid=first_id))
    _run(cfg, FixedClock())
    (case,) = _cases(cfg)
    # 1. by In-Reply-To, whatever the subject says
    _append(dovecot, mailbox_user, mails.make_mail("Nog een aanvulling.", subject="Andere kop", in_reply_to=first_id))
    _run(cfg, FixedClock())
    engine = db.make_engine(cfg.database.url)
    with db.session_factory(engine).begin() as s:
        s.get(Case, case.id).status = "closed"
    engine.dispose()
    # 2. by the reference in the subject, from someone else, without threading headers: reopens the case
    _append(dovecot, mailbox_user, mails.make_mail("Toch nog iets.", subject=f"Re: [{case.reference}] dank"))
    # 3. never by subject text alone: the same subject without headers or reference is a new case
    _append(dovecot, mailbox_user, mails.preparation(subject="Advies windpark Hooge Veld"))
    _run(cfg, FixedClock())
    rows = _cases(cfg)
    assert len(rows) == 2
    assert rows[0].status == "assigned" and rows[0].assignee == ADA  # reopened, still Ada's
    engine = db.make_engine(cfg.database.url)
    with db.session_factory(engine)() as s:
        in_case = s.scalars(select(Message.subject).where(Message.case_id == case.id).order_by(Message.id)).all()
        actions = s.scalars(select(CaseEvent.action).where(CaseEvent.case_id == case.id)).all()
    engine.dispose()
    assert in_case == ["Advies windpark Hooge Veld", "Andere kop", f"Re: [{case.reference}] dank"]
    assert "reopened" in actions and actions.count("follow-up") == 1


def test_when_everyone_on_duty_is_absent_and_there_is_no_fallback_the_alert_goes_to_the_duty_address(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    roster = ROSTER.replace(f'fallback = "{PIKET}"\n', "").replace(
        'organisation = "NGB"\ncapacity = 5\n',
        'organisation = "NGB"\ncapacity = 5\nabsences = [{ from = 2026-11-30, to = 2026-12-02, reason = "ziek" }]\n',
    )
    assert "fallback" not in roster and roster.count("absences") == 2
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path, roster))
    _append(dovecot, mailbox_user, mails.acute())
    _run(cfg, FixedClock())  # Cas and Dee, the only people on duty, are both away on 1 December
    alerts = [m for m in smtp_sink.messages if "Auto-Submitted: auto-generated" in m.content.decode(errors="replace")]
    assert [m.rcpt_tos for m in alerts] == [["dienst@omo.example"]]  # alerts.duty_address, never nobody
