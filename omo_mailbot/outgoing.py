"""The envelope of every mail omo-mailbot writes: one place for the headers that keep machines quiet.

Each outgoing mail — auto-reply, duty alert, digest, command answer, operator
alert — carries ``Auto-Submitted`` (``auto-replied`` for answers,
``auto-generated`` for the rest), ``X-Auto-Response-Suppress: All`` so
Exchange does not answer it, ``Precedence: bulk``, our loop header, and a
Message-ID on our own domain that the outbox stores, so a retry resends the
very same message. Answers thread to what they answer (RFC 5322
In-Reply-To/References). ``EmailMessage`` refuses CR/LF in header values, so no
text from a mail can inject a header. The Subject, which often quotes a mail's
subject, is made one line first: a line break that slipped through (U+2028 and the
like) must cost a space, not the whole reply or duty alert.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Literal

from .config import SmtpConfig
from .mail import ParsedMail, one_line

MAX_SUBJECT = 250


def new_message_id(prefix: str, domain: str) -> str:
    return f"<{prefix}{secrets.token_hex(12)}@{domain}>"


def machine_message(
    smtp: SmtpConfig,
    loop_header: str,
    *,
    to: str,
    subject: str,
    message_id: str,
    now: datetime,
    kind: Literal["auto-replied", "auto-generated"],
    answering: ParsedMail | None = None,
    language: str | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = formataddr((smtp.from_name, smtp.from_address))
    msg["To"] = to
    msg["Subject"] = one_line(subject)[:MAX_SUBJECT]
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    if answering is not None and answering.message_id:
        msg["In-Reply-To"] = answering.message_id
        msg["References"] = " ".join([*answering.references[-10:], answering.message_id])
    msg["Auto-Submitted"] = kind
    msg["X-Auto-Response-Suppress"] = "All"
    msg["Precedence"] = "bulk"
    msg[loop_header] = smtp.from_address
    if language:
        msg["Content-Language"] = language
    return msg
