"""Small mails written for the tests (our own words)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

_counter = itertools.count(1)

ACUTE_BODY = (
    "Goedemiddag,\n\nOp dit moment staan er ongeveer 150 demonstranten voor het gemeentehuis en de sfeer "
    "wordt grimmiger. Er wordt met vuurwerk gegooid. Kunt u vandaag nog iemand laten bellen? "
    "De burgemeester wil graag advies.\n\nMet vriendelijke groet,\nEls Vermeer\nOOV-adviseur\n"
)
PREPARATION_BODY = (
    "Beste mensen,\n\nIn maart neemt de raad een besluit over een windpark bij ons dorp. We verwachten "
    "veel reacties en willen ons goed voorbereiden op de participatieavond. Hebben jullie een expert "
    "die kan meedenken over de communicatiestrategie?\n\nHartelijke groet,\nRuud Bakker\nbeleidsmedewerker\n"
)


def make_mail(
    body: str,
    *,
    subject: str = "Vraag",
    sender: str = "els.vermeer@gemeente-voorbeeld.nl",
    name: str = "Els Vermeer",
    headers: dict[str, str] | None = None,
    msgid: str | None = None,
    in_reply_to: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{name} <{sender}>"
    msg["To"] = "Omo@minbzk.nl"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2026, 11, 30, 10, 0, tzinfo=UTC))
    msg["Message-ID"] = msgid or make_msgid(idstring=f"t{next(_counter)}", domain="gemeente-voorbeeld.nl")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes(policy=SMTP)


def acute(**kw: object) -> bytes:
    kw.setdefault("subject", "Demonstratie bij het gemeentehuis")
    return make_mail(ACUTE_BODY, **kw)  # type: ignore[arg-type]


def preparation(**kw: object) -> bytes:
    kw.setdefault("subject", "Advies windpark")
    kw.setdefault("sender", "ruud.bakker@gemeente-voorbeeld.nl")
    kw.setdefault("name", "Ruud Bakker")
    return make_mail(PREPARATION_BODY, **kw)  # type: ignore[arg-type]


BROKEN = (
    b"From: Kapot <kapot@gemeente-voorbeeld.nl>\r\nSubject: kapot bericht\r\n"
    b"Message-ID: <broken-1@gemeente-voorbeeld.nl>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="nooit-gezien"\r\n\r\n'
    b"\xff\xfe\x00garbage without any boundary\r\n=?x-unknown?q?zz?=\r\n"
)
