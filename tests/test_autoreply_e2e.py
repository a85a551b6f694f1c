"""Never answer a machine, end to end: a vacation responder loop and a burst from one sender."""

from __future__ import annotations

import email
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid

import pytest
from sqlalchemy import func, select

from omo_mailbot.models import Case, OutboxMail, Verdict
from omo_mailbot.service import build_service

from . import mails

pytestmark = pytest.mark.integration
RESPONDER = "vakantie@gemeente-voorbeeld.nl"


def _naive_vacation_reply(received: bytes) -> bytes:
    """What a careless responder sends back: no Auto-Submitted, no list headers, just 'Re:'."""
    original = email.message_from_bytes(received)
    reply = EmailMessage()
    reply["From"] = f"Piet Jansen <{RESPONDER}>"
    reply["To"] = "Omo@minbzk.nl"
    reply["Subject"] = "Re: " + str(original["Subject"])
    reply["Message-ID"] = make_msgid(domain="gemeente-voorbeeld.nl")
    reply["In-Reply-To"] = original["Message-ID"]
    reply["References"] = original["Message-ID"]
    # careless responders often paste the message they answer below their note, unquoted
    reply.set_content("Ik ben tot en met 4 december afwezig.\n\n" + mails.ACUTE_BODY)
    return reply.as_bytes(policy=SMTP)


def test_a_loop_with_a_vacation_responder_stops_after_one_exchange(dovecot, mailbox_user, smtp_sink, make_config):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    imap = dovecot.client(mailbox_user)
    imap.append("INBOX", mails.acute(sender=RESPONDER, name="Piet Jansen"))
    answered: set[int] = set()
    for _ in range(6):  # bounded: six rounds of "we answer, it answers back"
        service, engine = build_service(cfg)
        service.run_once()
        engine.dispose()
        for i, received in enumerate(smtp_sink.messages):
            if RESPONDER in received.rcpt_tos and i not in answered:
                answered.add(i)
                imap.append("INBOX", _naive_vacation_reply(received.content))
    imap.logout()
    to_responder = [m for m in smtp_sink.messages if RESPONDER in m.rcpt_tos]
    assert len(to_responder) == 1, "we answered the responder more than once"
    with service.sessions() as s:
        blocked = s.execute(select(Verdict.auto_reply_blocked_by).where(Verdict.auto_reply.is_(False))).scalars().all()
    # the responder's answer reads as acute, yet it was refused for pointing only at our auto-reply
    assert len(blocked) == 1 and "reply-to-our-auto-reply" in (blocked[0] or "")


def test_a_burst_of_50_mails_from_one_sender_gets_at_most_the_rate_limited_replies(
    dovecot, mailbox_user, smtp_sink, make_config
):
    # the per-minute send limit (30 by default) would only slow the 50 duty alerts down here
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra="[smtp]\nmax_per_minute = 1000\n")
    imap = dovecot.client(mailbox_user)
    for _ in range(50):
        imap.append("INBOX", mails.acute())  # each a new conversation from the same official
    imap.logout()
    service, engine = build_service(cfg)
    service.run_once()
    replies = [m for m in smtp_sink.messages if "els.vermeer@gemeente-voorbeeld.nl" in m.rcpt_tos]
    assert len(replies) == cfg.autoreply.per_sender_max == 3
    with service.sessions() as s:
        cases = s.execute(select(func.count(Case.id)).where(Case.label == "acute")).scalar_one()
        limited = s.execute(
            select(func.count(Verdict.id)).where(Verdict.auto_reply_blocked_by.like("rate-limit-sender%"))
        ).scalar_one()
        alerts = s.execute(select(func.count(OutboxMail.id)).where(OutboxMail.kind == "duty_alert")).scalar_one()
    assert cases == 50, "a suppressed acute mail is still an acute case"
    assert limited == 47
    assert alerts == 50, "every acute mail alerts the people on duty, answered or not"
    engine.dispose()


def test_retries_resend_the_same_message_id(dovecot, mailbox_user, smtp_sink, make_config):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    imap = dovecot.client(mailbox_user)
    imap.append("INBOX", mails.acute())
    imap.logout()
    smtp_sink.refuse_with = "451 4.3.0 try again later"
    service, engine = build_service(cfg)
    service.run_once()
    with service.sessions() as s:
        row = s.execute(select(OutboxMail).where(OutboxMail.kind == "auto_reply")).scalar_one()
    assert row.status == "pending" and row.attempts == 1 and "451" in (row.last_error or "")
    smtp_sink.refuse_with = None
    import time

    time.sleep(0.3)  # the test config backs off 0.2 s
    service.drain_outbox()
    (reply,) = [m for m in smtp_sink.messages if "els.vermeer@gemeente-voorbeeld.nl" in m.rcpt_tos]
    assert email.message_from_bytes(reply.content)["Message-ID"] == row.message_id_header
    engine.dispose()


def _bounce_for(address: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.gemeente-voorbeeld.nl>\r\n"
        "To: Omo@minbzk.nl\r\nReturn-Path: <>\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-1@mx.gemeente-voorbeeld.nl>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.gemeente-voorbeeld.nl\r\n\r\n"
        f"Final-Recipient: rfc822; {address}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--b1--\r\n"
    ).encode()


def test_a_hard_bounce_is_no_case_and_stops_replies_to_that_address(dovecot, mailbox_user, smtp_sink, make_config):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    imap = dovecot.client(mailbox_user)
    imap.append("INBOX", _bounce_for("els.vermeer@gemeente-voorbeeld.nl"))
    imap.append("INBOX", mails.acute())
    imap.logout()
    service, engine = build_service(cfg)
    service.run_once()  # both in one FETCH batch, so one transaction: the bounce must count before it commits
    assert not [m for m in smtp_sink.messages if "els.vermeer@gemeente-voorbeeld.nl" in m.rcpt_tos]
    with service.sessions() as s:
        verdicts = s.execute(select(Verdict).order_by(Verdict.id)).scalars().all()
        cases = s.execute(select(func.count(Case.id))).scalar_one()
    bounce, acute = verdicts
    assert bounce.label == "automated"
    assert acute.label == "acute" and (acute.auto_reply_blocked_by or "").startswith("hard-bounce")
    assert cases == 1, "the bounce itself never becomes a case"
    engine.dispose()


def test_preparation_mail_is_acknowledged_only_when_the_operator_turns_it_on(
    dovecot, mailbox_user, smtp_sink, make_config
):
    cfg = make_config(
        dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra="[autoreply]\nacknowledge_preparation = true\n"
    )
    imap = dovecot.client(mailbox_user)
    imap.append("INBOX", mails.preparation())
    imap.append("INBOX", mails.preparation(headers={"Precedence": "bulk"}))  # the guards still apply
    imap.logout()
    service, engine = build_service(cfg)
    service.run_once()
    (ack,) = smtp_sink.messages  # no duty alert: preparation is not acute
    reply = email.message_from_bytes(ack.content)
    assert ack.rcpt_tos == ["ruud.bakker@gemeente-voorbeeld.nl"]
    assert reply["Auto-Submitted"] == "auto-replied" and "OMO-" in reply["Subject"]
    assert (
        "De contactpersonen van het netwerk krijgen het uiterlijk op"
        in reply.get_payload(0).get_payload(decode=True).decode()
    )
    with service.sessions() as s:
        labels = s.execute(select(Verdict.label, Verdict.auto_reply).order_by(Verdict.id)).all()
    assert labels == [("preparation", True), ("automated", False)]
    engine.dispose()
