"""What a mail can do to the reply and duty alert we build for it, and to the brakes on them.

A decoded header must never make building our message fail (an acute mail would lose
its reply and its duty alert), a display name must never add a recipient, and a
``+tag`` must never buy a sender a fresh rate-limit budget or slip past a bounce block.
"""

from __future__ import annotations

import base64
import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from omo_mailbot import autoreply
from omo_mailbot.config import AutoReplyConfig, SmtpConfig
from omo_mailbot.guards import GuardPolicy, check
from omo_mailbot.mail import ParsedMail, normalise_address, parse
from omo_mailbot.models import Base, Bounce
from omo_mailbot.outbox import enqueue
from omo_mailbot.templating import Templates
from omo_mailbot.text import new_text
from omo_mailbot.verdict import Decision

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
POLICY = GuardPolicy(own_addresses=frozenset({"omo@minbzk.nl"}))

# Every character str.splitlines() breaks on that RFC 2047 can smuggle into a decoded header.
LINE_BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r\n", "\n"]


def _mail(subject: str, from_header: str = "Els Vermeer <els.vermeer@gemeente-voorbeeld.nl>") -> ParsedMail:
    raw = (
        f"From: {from_header}\r\nTo: Omo@minbzk.nl\r\nSubject: {subject}\r\n"
        "Message-ID: <safety-1@gemeente-voorbeeld.nl>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nVanavond dreigt onrust bij het gemeentehuis.\r\n"
    )
    return parse(raw.encode())


def _decision(mail: ParsedMail) -> Decision:
    """An acute decision without the model: build_reply and build_duty_alert only read these fields."""
    return Decision(
        label="acute",
        score=9.0,
        threshold=5.0,
        acute_probability=None,
        hits=(),
        guard=check(mail, POLICY),
        text=new_text(mail),
        language="nl",
    )


def _reply(mail: ParsedMail) -> email.message.Message:
    decision = _decision(mail)
    assert decision.guard.reply_to is not None
    raw, _ = autoreply.build_reply(
        Templates(ROOT / "templates"),
        SmtpConfig(),
        AutoReplyConfig(),
        mail,
        decision,
        decision.guard.reply_to,
        "OMO-2026-0001",
        "maandag 2 maart",
        NOW,
    )
    return email.message_from_bytes(raw, policy=email.policy.default)


def _duty_alert(mail: ParsedMail) -> email.message.Message:
    raw, _ = autoreply.build_duty_alert(
        Templates(ROOT / "templates"),
        SmtpConfig(),
        AutoReplyConfig(),
        mail,
        _decision(mail),
        "dienst@minbzk.nl",
        "OMO-2026-0001",
        "ja",
        NOW,
    )
    return email.message_from_bytes(raw, policy=email.policy.default)


def _b64_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


# --- line breaks in decoded headers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "subject"),
    [
        ("=?iso-8859-1?q?Onrust_vanavond=85?= centrum", "Onrust vanavond  centrum"),
        ("=?iso-8859-1?q?Onrust_vanavond=85?=", "Onrust vanavond"),  # at the end it is stripped
        ("=?iso-8859-1?q?Onrust=85vanavond?=", "Onrust vanavond"),
    ],
)
def test_a_latin1_next_line_in_the_subject_becomes_a_space(header: str, subject: str) -> None:
    mail = _mail(header)
    assert mail.subject == subject
    assert str(_reply(mail)["Subject"]) == f"Ontvangen: {subject} [OMO-2026-0001]"
    assert str(_duty_alert(mail)["Subject"]) == f"[ACUUT OMO-2026-0001] {subject}"


@pytest.mark.parametrize("brk", LINE_BREAKS, ids=[repr(b) for b in LINE_BREAKS])
def test_a_line_break_in_a_decoded_subject_becomes_a_space(brk: str) -> None:
    mail = _mail(_b64_word(f"Onrust{brk}vanavond"))
    assert " ".join(mail.subject.split()) == "Onrust vanavond"
    assert not mail.subject.splitlines()[1:], mail.subject
    assert " ".join(str(_reply(mail)["Subject"]).split()) == "Ontvangen: Onrust vanavond [OMO-2026-0001]"
    assert " ".join(str(_duty_alert(mail)["Subject"]).split()) == "[ACUUT OMO-2026-0001] Onrust vanavond"


def test_a_utf8_line_separator_in_a_q_encoded_subject_becomes_a_space() -> None:
    mail = _mail("=?utf-8?q?Onrust=E2=80=A8vanavond?=")
    assert mail.subject == "Onrust vanavond"
    assert str(_reply(mail)["Subject"]).startswith("Ontvangen: Onrust vanavond")
    assert str(_duty_alert(mail)["Subject"]) == "[ACUUT OMO-2026-0001] Onrust vanavond"


@pytest.mark.parametrize("brk", ["\x85", "\u2028", "\u2029", "\x0b"], ids=repr)
def test_a_line_break_in_a_decoded_display_name_neither_breaks_nor_injects(brk: str) -> None:
    mail = _mail("Onrust", from_header=f"{_b64_word(f'Jörg{brk}Bcc: evil@x.example')} <alice@example.nl>")
    assert mail.from_ is not None and not mail.from_.name.splitlines()[1:]
    reply = _reply(mail)
    assert [a for _, a in getaddresses(reply.get_all("To", []))] == ["alice@example.nl"]
    assert reply["Bcc"] is None and reply["Cc"] is None


# --- the display name in our To header ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "=?utf-8?q?=22J=C3=B6rg=22_=3Ca=40b.c=3E=2C?=",
        "=?utf-8?q?Bob_=3Cevil=40x.example=3E=2C_carol=40y.example?=",
        "=?utf-8?q?J=C3=B6rg=2C_evil=40x.example_=3Cevil=40x.example=3E?=",
        "=?utf-8?q?=5C=22=3B=3A?=",
    ],
)
def test_a_decoded_display_name_never_adds_a_recipient(name: str) -> None:
    reply = _reply(_mail("Onrust", from_header=f"{name} <alice@example.nl>"))
    assert [a for _, a in getaddresses(reply.get_all("To", []))] == ["alice@example.nl"]
    assert [a.addr_spec for a in reply["To"].addresses] == ["alice@example.nl"]


def test_an_ordinary_display_name_is_kept() -> None:
    reply = _reply(_mail("Onrust", from_header="=?utf-8?q?J=C3=B6rg_de_Vries?= <alice@example.nl>"))
    assert [(a.display_name, a.addr_spec) for a in reply["To"].addresses] == [("Jörg de Vries", "alice@example.nl")]


def test_a_name_of_only_address_syntax_leaves_the_bare_address() -> None:
    reply = _reply(_mail("Onrust", from_header="=?utf-8?q?=3C=3E=2C=40?= <alice@example.nl>"))
    assert [(a.display_name, a.addr_spec) for a in reply["To"].addresses] == [("", "alice@example.nl")]


# --- one mailbox, one budget ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "mailbox"),
    [
        ("Victim+7@X.example", "victim@x.example"),
        ("victim+a+b@x.example", "victim@x.example"),
        (" victim@x.example ", "victim@x.example"),
        ("+31612345678@sms.example", "+31612345678@sms.example"),
        ("no-at-sign", "no-at-sign"),
    ],
)
def test_normalise_address(addr: str, mailbox: str) -> None:
    assert normalise_address(addr) == mailbox


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()


def _replied(session: Session, recipient: str, thread: str, at: datetime = NOW) -> None:
    enqueue(
        session,
        kind="auto_reply",
        raw=b"x",
        recipient=recipient,
        message_id=f"<r.{recipient}.{thread}@minbzk.nl>",
        now=at,
        thread_key=thread,
    )


def test_a_tag_does_not_buy_a_fresh_sender_budget(session: Session) -> None:
    cfg = AutoReplyConfig()
    for i in range(cfg.per_sender_max):
        _replied(session, "victim@x.example", f"<t{i}@x.example>")
    for address in ("victim+7@x.example", "Victim+other@X.example", "VICTIM@x.example"):
        blocked = autoreply.rate_limit_block(session, cfg, address, "<new@x.example>", NOW)
        assert blocked is not None and blocked.startswith("rate-limit-sender"), address


def test_earlier_replies_to_tagged_addresses_count_for_the_mailbox(session: Session) -> None:
    cfg = AutoReplyConfig()
    for i in range(cfg.per_sender_max):  # stored as sent, tag and all
        _replied(session, f"victim+{i}@x.example", f"<t{i}@x.example>")
    for address in ("victim@x.example", "victim+99@x.example"):
        blocked = autoreply.rate_limit_block(session, cfg, address, "<new@x.example>", NOW)
        assert blocked is not None and blocked.startswith("rate-limit-sender"), address


def test_the_thread_limit_sees_through_tags(session: Session) -> None:
    _replied(session, "victim+1@x.example", "<t@x.example>")
    blocked = autoreply.rate_limit_block(session, AutoReplyConfig(), "victim+2@x.example", "<t@x.example>", NOW)
    assert blocked is not None and blocked.startswith("rate-limit-thread")


@pytest.mark.parametrize("bounced", ["victim@x.example", "victim+3@x.example"])
@pytest.mark.parametrize("asked", ["victim@x.example", "victim+9@x.example"])
def test_a_bounce_blocks_every_tag_of_the_mailbox(session: Session, bounced: str, asked: str) -> None:
    session.add(Bounce(address=bounced, at=NOW - timedelta(days=1)))
    blocked = autoreply.rate_limit_block(session, AutoReplyConfig(), asked, "<new@x.example>", NOW)
    assert blocked is not None and blocked.startswith("hard-bounce")


@pytest.mark.parametrize(
    "other",
    ["victimx@x.example", "victim@x.example.org", "xvictim@x.example", "victim.2@x.example", "avictim+1@x.example"],
)
def test_other_mailboxes_keep_their_own_budget(session: Session, other: str) -> None:
    cfg = AutoReplyConfig()
    for i in range(cfg.per_sender_max):
        _replied(session, "victim@x.example", f"<t{i}@x.example>")
    session.add(Bounce(address="victim+1@x.example", at=NOW))
    assert autoreply.rate_limit_block(session, cfg, other, "<new@x.example>", NOW) is None


def test_like_wildcards_in_an_address_match_only_themselves(session: Session) -> None:
    cfg = AutoReplyConfig()
    for i in range(cfg.per_sender_max):
        _replied(session, "a_b+1@x.example", f"<t{i}@x.example>")
        _replied(session, "c%d@x.example", f"<u{i}@x.example>")
    assert autoreply.rate_limit_block(session, cfg, "axb@x.example", "<new@x.example>", NOW) is None
    assert autoreply.rate_limit_block(session, cfg, "a_b@x.example", "<new@x.example>", NOW) is not None
    assert autoreply.rate_limit_block(session, cfg, "cxd+1@x.example", "<new@x.example>", NOW) is None
    assert autoreply.rate_limit_block(session, cfg, "c%d+1@x.example", "<new@x.example>", NOW) is not None
