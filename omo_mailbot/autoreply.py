"""The acute auto-reply and the duty alert: whether to send, and what.

The header policy (never answer a machine) is in :mod:`guards`; this module adds
what needs the database — rate limits per sender per thread, per sender and in
total, and recent hard bounces — and builds the messages. The reply goes to
exactly one address, carries ``Auto-Submitted: auto-replied``, threading
headers, ``X-Auto-Response-Suppress: All``, ``Precedence: bulk``, our loop
header and a Message-ID on our domain that is stored with the outbox row, so
retries resend the very same message.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, or_, select
from sqlalchemy.orm import Session

from .config import AutoReplyConfig, SmtpConfig
from .hotsql import HotStatement
from .mail import Address, ParsedMail, normalise_address
from .models import Bounce, OutboxMail, table_of
from .outgoing import machine_mail, new_message_id
from .templating import Templates
from .verdict import Decision

REPLY_PREFIX = "omo-reply."
ALERT_PREFIX = "omo-alert."


def thread_key(mail: ParsedMail) -> str:
    """The first message of the conversation as far as the headers tell (cut to the column's 998 characters,
    so a key is compared as it is stored)."""
    if mail.references:
        return mail.references[0][:998]
    if mail.in_reply_to:
        return mail.in_reply_to[0][:998]
    return (mail.message_id or "")[:998]


_OUT = table_of(OutboxMail)
_BOUNCES = table_of(Bounce)
_LIKE_ESCAPE = "/"


def _same_mailbox(column: Any) -> ColumnElement[bool]:
    """``column`` holds the mailbox ``recipient`` names, with or without a ``+tag``.

    Outbox and bounce rows keep the address as it was (lower-cased), tag and all, and
    rows written before normalisation existed must still count; so instead of a new
    column the match is made here: the bare address itself, or ``local+…@domain``
    (``tagged``, a LIKE pattern made by :func:`_tagged_pattern`).
    """
    return or_(column == bindparam("recipient"), column.like(bindparam("tagged"), escape=_LIKE_ESCAPE))


def _tagged_pattern(recipient: str) -> str:
    """The LIKE pattern for every ``+tag`` form of the normalised ``recipient``; %, _ and / escaped."""
    local, _, domain = recipient.rpartition("@")

    def esc(text: str) -> str:
        return "".join(_LIKE_ESCAPE + c if c in "%_" + _LIKE_ESCAPE else c for c in text)

    return f"{esc(local)}+%@{esc(domain)}"


def _replies_since(since: str) -> Select[Any]:
    return select(func.count(_OUT.c.id)).where(_OUT.c.kind == "auto_reply", _OUT.c.created_at >= bindparam(since))


# The four counts of the brakes in one statement (one round trip, one snapshot), each a scalar
# subquery with its own window: in this thread, to this mailbox, in total, and hard bounces.
_BRAKES = HotStatement(
    select(
        _replies_since("thread_since")
        .where(_same_mailbox(_OUT.c.recipient), _OUT.c.thread_key == bindparam("thread"))
        .scalar_subquery(),
        _replies_since("sender_since").where(_same_mailbox(_OUT.c.recipient)).scalar_subquery(),
        _replies_since("hour_since").scalar_subquery(),
        select(func.count(_BOUNCES.c.id))
        .where(_same_mailbox(_BOUNCES.c.address), _BOUNCES.c.at >= bindparam("bounce_since"))
        .scalar_subquery(),
    )
)


def rate_limit_block(session: Session, cfg: AutoReplyConfig, recipient: str, thread: str, now: datetime) -> str | None:
    """Why the brakes forbid a reply to ``recipient`` now, or None.

    The session first writes what it holds pending (a bounce recorded earlier in the same
    batch counts); the counts are one statement, built once, so every instance on the
    database sees the rows the others committed. Addresses are
    compared as mailboxes (:func:`~omo_mailbot.mail.normalise_address`): ``victim+1@x``,
    ``victim+2@x`` and ``victim@x`` share one budget and one bounce block. Without a
    ``thread`` there is no thread limit.
    """
    recipient = normalise_address(recipient)
    params = {
        "recipient": recipient,
        "tagged": _tagged_pattern(recipient),
        "thread": thread,
        "thread_since": now - timedelta(hours=cfg.per_thread_window_hours),
        "sender_since": now - timedelta(hours=cfg.per_sender_window_hours),
        "hour_since": now - timedelta(hours=1),
        "bounce_since": now - timedelta(days=cfg.bounce_block_days),
    }
    session.flush()  # the statement runs on the driver's cursor, past the session's autoflush
    in_thread, to_sender, in_hour, bounced = _BRAKES.row(session, params)
    if thread and int(in_thread) >= cfg.per_thread_max:
        return f"rate-limit-thread: already answered this conversation in the last {cfg.per_thread_window_hours:g} h"
    if int(to_sender) >= cfg.per_sender_max:
        return (
            f"rate-limit-sender: {cfg.per_sender_max} replies to this address in the last "
            f"{cfg.per_sender_window_hours:g} h"
        )
    if int(in_hour) >= cfg.global_max_per_hour:
        return f"circuit-breaker: {cfg.global_max_per_hour} auto-replies in the last hour"
    if int(bounced):
        return f"hard-bounce: this address bounced in the last {cfg.bounce_block_days} days"
    return None


_NAME_SPECIALS = re.compile(r'[<>,;:@"\\]')


def _to_name(recipient: Address) -> str:
    """The display name for our To header: ``recipient``'s without address syntax, or "" for the bare address.

    A display name comes decoded from RFC 2047 and may read ``"Jörg" <a@b.c>,``. Written
    back as it is, a parser could read a second recipient ``a@b.c`` (RFC 3834 §3.1.3
    allows one). Without <>,;:@" and backslash no name can spell an address; when
    nothing sensible is left the bare address is used.
    """
    name = " ".join(_NAME_SPECIALS.sub(" ", recipient.name).split())
    return name if any(c.isalnum() for c in name) else ""


def _subject(original: str, reference: str, lang: str) -> str:
    base = original.strip() or ("(geen onderwerp)" if lang == "nl" else "(no subject)")
    if reference.lower() not in base.lower():
        base = f"{base} [{reference}]"
    prefix = "Ontvangen: " if lang == "nl" else "Received: "
    return (prefix + base)[:250]


def build_reply(
    templates: Templates,
    smtp: SmtpConfig,
    ar: AutoReplyConfig,
    mail: ParsedMail,
    decision: Decision,
    recipient: Address,
    reference: str,
    contact_day: str,
    now: datetime,
    template: str = "acute_reply",
) -> tuple[bytes, str]:
    """The automatic answer: ``acute_reply`` (guidance) or ``preparation_ack`` (an acknowledgement).

    ``contact_day`` is the day whose digest first shows the mail to the contact
    persons (``WorkCalendar.first_digest_day``), written out. Templates written
    before it was named so may still use ``next_working_day``.
    """
    lang = "en" if decision.language == "en" else "nl"
    context = {
        "name": recipient.name,
        "reference": reference,
        "contact_day": contact_day,
        "next_working_day": contact_day,
        "our_address": smtp.from_address,
    }
    message_id = new_message_id(REPLY_PREFIX, smtp.message_id_domain)
    raw = machine_mail(
        smtp,
        ar.loop_header,
        to=recipient.addr,
        to_name=_to_name(recipient),
        subject=_subject(mail.subject, reference, lang),
        message_id=message_id,
        now=now,
        kind="auto-replied",
        text=templates.render_text(f"{template}.{lang}.txt", context),
        html=templates.render_html(f"{template}.{lang}.html", context),
        answering=mail,
        language=lang,
    )
    return raw, message_id


def build_duty_alert(
    templates: Templates,
    smtp: SmtpConfig,
    ar: AutoReplyConfig,
    mail: ParsedMail,
    decision: Decision,
    to: str,
    reference: str,
    sent: str,
    now: datetime,
) -> tuple[bytes, str]:
    sender = mail.from_.addr if mail.from_ else "(onbekend)"
    hits = [
        {"symbol": h.symbol, "weight": h.weight, "description": h.description, "matched": list(h.matched)}
        for h in decision.hits
        if h.weight > 0
    ]
    excerpt = "\n".join(decision.text.new.splitlines()[:12])[:1200]
    context = {
        "reference": reference,
        "received": format_datetime(now),
        "sender": sender,
        "subject": mail.subject or "(geen onderwerp)",
        "score": decision.score,
        "threshold": decision.threshold,
        "hits": hits,
        "sent": sent,
        "excerpt": excerpt,
    }
    message_id = new_message_id(ALERT_PREFIX, smtp.message_id_domain)
    subject = f"[ACUUT {reference}] {mail.subject or '(geen onderwerp)'}"
    raw = machine_mail(
        smtp,
        ar.loop_header,
        to=to,
        subject=subject,
        message_id=message_id,
        now=now,
        kind="auto-generated",
        text=templates.render_text("duty_alert.txt", context),
    )
    return raw, message_id
