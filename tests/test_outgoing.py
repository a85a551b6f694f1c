"""The message writer of outgoing.py: what a receiver parses back, and what text from a mail cannot do to it.

Every mail is parsed back with the stdlib's strict ``policy.default`` parser, as a
receiving client would: the machine headers are there, the subject and display
name decode to what was given (line breaks turned into spaces), the bodies decode
to the rendered text, and no value — however many CR, LF, U+2028 or encoded-word
look-alikes it carries — adds a header line.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omo_mailbot.config import SmtpConfig
from omo_mailbot.mail import ParsedMail, one_line
from omo_mailbot.outgoing import MAX_REFERENCES, MAX_SUBJECT, machine_mail

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SMTP = SmtpConfig()
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
REPLY_HEADERS = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
    "Precedence",
    "X-Omo-Loop",
    "Content-Language",
    "MIME-Version",
    "Content-Type",
]
BREAKS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def _answering(message_id: str = "<orig@gemeente.example>", references: tuple[str, ...] = ()) -> ParsedMail:
    return ParsedMail(headers=(), message_id=message_id, references=references)


def _build(
    *,
    subject: str = "Ontvangen: onrust",
    to: str = "alice@example.nl",
    to_name: str = "",
    text: str = "Tekst\n",
    html: str | None = "<p>Tekst</p>\n",
    answering: ParsedMail | None = None,
) -> bytes:
    return machine_mail(
        SMTP,
        "X-Omo-Loop",
        to=to,
        to_name=to_name,
        subject=subject,
        message_id="<omo-reply.0123@minbzk.nl>",
        now=NOW,
        kind="auto-replied",
        text=text,
        html=html,
        answering=answering if answering is not None else _answering(),
        language="nl",
    )


def _parsed(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def _lf(content: str) -> str:
    """Content as a client shows it: the stdlib keeps the CRLF of the wire in a decoded body."""
    return content.replace("\r\n", "\n")


def _header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if not line.startswith((" ", "\t"))]


def test_the_machine_headers_and_threading() -> None:
    refs = tuple(f"<r{i}@x.example>" for i in range(14))
    raw = _build(answering=_answering(references=refs))
    assert _header_names(raw) == REPLY_HEADERS
    msg = _parsed(raw)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Precedence"] == "bulk"
    assert msg["X-Omo-Loop"] == SMTP.from_address
    assert msg["Content-Language"] == "nl"
    assert msg["Message-ID"] == "<omo-reply.0123@minbzk.nl>"
    assert msg["In-Reply-To"].strip() == "<orig@gemeente.example>"
    assert msg["References"].split() == [*refs[-MAX_REFERENCES:], "<orig@gemeente.example>"]
    assert [(a.display_name, a.addr_spec) for a in msg["From"].addresses] == [(SMTP.from_name, SMTP.from_address)]
    assert msg["Date"].datetime == NOW


def test_no_threading_headers_without_a_usable_message_id() -> None:
    for mid in ["", "<ä@x.example>", "<a b@x.example>", "<" + "a" * 1000 + "@x.example>"]:
        names = _header_names(_build(answering=_answering(message_id=mid)))
        assert "In-Reply-To" not in names and "References" not in names, mid


def test_unusable_references_are_left_out() -> None:
    refs = ("<good@x.example>", "<bäd@x.example>", "no-brackets@x", "<" + "b" * 1000 + "@x>")
    msg = _parsed(_build(answering=_answering(references=refs)))
    assert msg["References"].split() == ["<good@x.example>", "<orig@gemeente.example>"]


def test_a_long_references_header_is_folded_and_unfolds_to_the_ids() -> None:
    refs = tuple(f"<{i}.{'x' * 40}@gemeente.example>" for i in range(10))
    raw = _build(answering=_answering(references=refs))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert _parsed(raw)["References"].split() == [*refs, "<orig@gemeente.example>"]


def test_text_and_html_decode_to_what_was_rendered() -> None:
    text = "Geachte heer Jörg,\n\n" + "Een lange regel met = en é " * 20 + "\n.\nFrom here \nlaatste\t\n"
    html = '<p class="x">Tekst — “quotes” &amp; € ' + "lang " * 40 + "</p>\n"
    raw = _build(text=text, html=html)
    msg = _parsed(raw)
    assert msg.get_content_type() == "multipart/alternative"
    plain, rich = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and rich is not None
    assert _lf(plain.get_content()) == text and _lf(rich.get_content()) == html
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content_charset() == "utf-8"
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert raw.isascii() and b"\n" not in raw.replace(b"\r\n", b"")


def test_line_ends_in_a_body_become_crlf_and_a_last_one_is_added() -> None:
    msg = _parsed(_build(text="a\r\nb\rc\nd", html=None))
    assert msg.get_content_type() == "text/plain"
    assert _lf(msg.get_content()) == "a\nb\nc\nd\n"


@pytest.mark.parametrize(
    "subject",
    [
        "Ontvangen: Onrust in Münster [OMO-2026-0001]",
        "Ontvangen: twee  spaties en   drie",
        "Ontvangen: =?utf-8?q?geen_encoded_word?= blijft letterlijk",
        "Ontvangen: " + "ééé " * 60,
        "Ontvangen: " + "x" * 200,
        "日本語の件名 [OMO-2026-0001]",
        "Ontvangen: tab\there",
    ],
)
def test_a_subject_decodes_to_itself(subject: str) -> None:
    raw = _build(subject=subject)
    assert str(_parsed(raw)["Subject"]) == subject[:MAX_SUBJECT]
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


@pytest.mark.parametrize("brk", BREAKS, ids=repr)
def test_a_line_break_in_subject_or_name_costs_a_space_and_injects_nothing(brk: str) -> None:
    raw = _build(subject=f"Onrust{brk}Bcc: evil@x.example", to_name=f"Jörg{brk}Bcc: evil@x.example")
    assert _header_names(raw) == REPLY_HEADERS
    msg = _parsed(raw)
    assert msg["Bcc"] is None
    assert " ".join(str(msg["Subject"]).split()) == "Onrust Bcc: evil@x.example"
    assert [a.addr_spec for a in msg["To"].addresses] == ["alice@example.nl"]


@pytest.mark.parametrize("to", ["a@b.example\r\nBcc: evil@x.example", "a@b.example\n", "a@b.example, evil@x", "<a@b>"])
def test_an_address_that_could_add_a_header_or_recipient_is_refused(to: str) -> None:
    with pytest.raises(ValueError):
        _build(to=to)


@pytest.mark.parametrize("loop", ["X-Omo-Loop\r\nBcc", "X Loop", "X:Loop", ""])
def test_a_bad_loop_header_name_is_refused(loop: str) -> None:
    with pytest.raises(ValueError):
        machine_mail(
            SMTP, loop, to="a@b.example", subject="s", message_id="<m@x>", now=NOW, kind="auto-generated", text=""
        )


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("Els Vermeer", "To: Els Vermeer <alice@example.nl>"),
        ("Vermeer, Els (gemeente)", 'To: "Vermeer, Els (gemeente)" <alice@example.nl>'),
        ('Els "E" Vermeer\\', 'To: "Els \\"E\\" Vermeer\\\\" <alice@example.nl>'),
        ("", "To: alice@example.nl"),
    ],
)
def test_an_ascii_display_name_is_written_plainly_or_quoted(name: str, written: str) -> None:
    raw = _build(to_name=name)
    assert written.encode() in raw.split(b"\r\n")
    assert [(a.display_name, a.addr_spec) for a in _parsed(raw)["To"].addresses] == [(name, "alice@example.nl")]


_names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120)


@SETTINGS
@given(subject=_names, name=_names)
def test_any_subject_and_display_name_round_trip_without_new_headers(subject: str, name: str) -> None:
    raw = _build(subject=subject, to_name=name)
    assert _header_names(raw) == REPLY_HEADERS
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = _parsed(raw)
    assert [a.addr_spec for a in msg["To"].addresses] == ["alice@example.nl"]
    expected = one_line(subject)[:MAX_SUBJECT]
    assert " ".join(str(msg["Subject"]).split()) == " ".join(expected.split())
    # CPython's address parser keeps the space between two encoded words (RFC 2047 §6.2 drops it),
    # as it does for what EmailMessage writes; so a long name is compared without its spaces.
    assert "".join(msg["To"].addresses[0].display_name.split()) == "".join(one_line(name).split())


@SETTINGS
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_any_text_body_round_trips(text: str) -> None:
    msg = _parsed(_build(text=text, html=None))
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()
    assert _lf(msg.get_content()) == ("".join(f"{line}\n" for line in lines) or "\n")
