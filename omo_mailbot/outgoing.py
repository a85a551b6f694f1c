"""The envelope of every mail omo-mailbot writes: one place for the headers that keep machines quiet.

Each outgoing mail — auto-reply, duty alert, digest, command answer, operator
alert — carries ``Auto-Submitted`` (``auto-replied`` for answers,
``auto-generated`` for the rest), ``X-Auto-Response-Suppress: All`` so
Exchange does not answer it, ``Precedence: bulk``, our loop header, and a
Message-ID on our own domain that the outbox stores, so a retry resends the
very same message. Answers thread to what they answer (RFC 5322
In-Reply-To/References, at most the last ten references and the answered id).

The message is written here byte by byte rather than through ``EmailMessage``,
whose header registry and pure-Python quoted-printable cost about 2 ms a reply
(``bench/replies.py``). No text from a mail can inject a header: every value is
made one line first (:func:`~omo_mailbot.mail.one_line` — a line break that
slipped through, U+2028 and the like, costs a space, not the whole reply or duty
alert), a word that is not printable ASCII or looks like an encoded word is
RFC 2047 encoded (UTF-8, base64), a line is only ever folded by putting CRLF
before a space that is already there, message ids that are not one printable
ASCII token are left out, and an address with a line break, a control character or
``<>,;`` is refused. Bodies are UTF-8 quoted-printable (``binascii``, C) with CRLF
line ends; the multipart boundary starts with ``=_``, which quoted-printable
cannot produce.
"""

from __future__ import annotations

import binascii
import re
import secrets
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache
from typing import Literal

from .config import SmtpConfig
from .mail import ParsedMail, one_line

MAX_SUBJECT = 250
MAX_REFERENCES = 10

_CRLF = "\r\n"
_FOLD_AT = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters
_MAX_ID = 900  # a longer message id could not stay within the 998 octets a line MUST keep to
_WORD_BYTES = 42  # UTF-8 bytes per encoded word: 56 base64 characters, 68 in all, "Subject: " + 68 < 78
_LONG_WORD = 68  # a longer word is encoded, so that it can be folded; "Subject: " + 68 < 78
_PLAIN_WORD = re.compile(r"[!-~]*")  # printable ASCII without space
_QUOTE_NAME = re.compile(r'[][\\()<>@,:;".]')  # a display name with these needs quotes (as formataddr)
_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>,;\x85\u2028\u2029]")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_TOKEN = re.compile(r"[A-Za-z0-9-]+")


def new_message_id(prefix: str, domain: str) -> str:
    return f"<{prefix}{secrets.token_hex(12)}@{domain}>"


def _needs_encoding(word: str) -> bool:
    """Not printable ASCII, or read as an encoded word, or too long to fold: encode it."""
    return len(word) > _LONG_WORD or "=?" in word or _PLAIN_WORD.fullmatch(word) is None


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 ``=?utf-8?b?…?=`` words of whole characters; adjacent ones decode without a gap."""
    data = text.encode("utf-8")
    words: list[str] = []
    start = 0
    while start < len(data):  # each round takes at least one whole character
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # never cut a character: at most 3 steps back
            end -= 1
        words.append("=?utf-8?b?" + binascii.b2a_base64(data[start:end], newline=False).decode("ascii") + "?=")
        start = end
    return words


def _fold(name: str, pieces: list[str]) -> str:
    """``name:`` and ``pieces``, each after one space; a long line breaks by CRLF before such a space.

    Unfolding (removing the CRLF) gives back exactly the spaces that were there. A piece of
    at most 68 characters fits on the first line after any of our header names.
    """
    line = f"{name}:"
    lines: list[str] = []
    for piece in pieces:  # an empty piece (two spaces in a row) never starts a line: no line is only blanks
        if piece and len(line) + 1 + len(piece) > _FOLD_AT:
            lines.append(line)
            line = ""
        line = f"{line} {piece}"
    lines.append(line)
    return _CRLF.join(lines) + _CRLF


def _unstructured(name: str, value: str) -> str:
    """An unstructured header (RFC 5322 §3.2.5): the words that need it encoded, spaces kept exactly."""
    words = one_line(value).split(" ")
    flags = [_needs_encoding(w) for w in words]
    if True not in flags:
        return _fold(name, words)
    first = flags.index(True)
    last = len(flags) - 1 - flags[::-1].index(True)
    # one encoded stretch from the first to the last word needing it, its inner spaces inside the encoding
    middle = _encoded_words(" ".join(words[first : last + 1]))
    return _fold(name, [*words[:first], *middle, *words[last + 1 :]])


def _checked_address(addr: str) -> str:
    if not addr or _BAD_ADDRESS.search(addr):
        raise ValueError("not an address that can be written in a header")
    return addr


def _mailbox(name: str, addr: str) -> list[str]:
    """The pieces of ``name <addr>`` (RFC 5322 name-addr); the bare address without a name."""
    addr = _checked_address(addr)
    name = one_line(name).strip()
    if not name:
        return [addr if _PLAIN_WORD.fullmatch(addr) else f"<{addr}>"]
    words = name.split(" ")
    if not any(_needs_encoding(w) for w in words):
        if _QUOTE_NAME.search(name) is None:
            return [*words, f"<{addr}>"]
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        if len(quoted) <= _LONG_WORD:
            return [f'"{quoted}"', f"<{addr}>"]
    return [*_encoded_words(name), f"<{addr}>"]


def _usable_id(value: str) -> bool:
    """A message id we can write: one printable-ASCII token in angle brackets, short enough for a line."""
    return (
        2 < len(value) <= _MAX_ID and value[0] == "<" and value[-1] == ">" and _PLAIN_WORD.fullmatch(value) is not None
    )


@lru_cache(maxsize=16)
def _from_line(from_name: str, from_address: str) -> str:
    return _fold("From", _mailbox(from_name, from_address))


@lru_cache(maxsize=16)
def _machine_lines(kind: str, loop_header: str, from_address: str) -> str:
    """The headers that are the same in every mail of one ``kind``."""
    if _FIELD_NAME.fullmatch(loop_header) is None:
        raise ValueError(f"not a header name: {loop_header!r}")
    return (
        f"Auto-Submitted: {kind}{_CRLF}"
        f"X-Auto-Response-Suppress: All{_CRLF}"
        f"Precedence: bulk{_CRLF}"
        f"{loop_header}: {_checked_address(from_address)}{_CRLF}"
    )


def _threading(answering: ParsedMail | None) -> str:
    """In-Reply-To and References for an answer to ``answering``; nothing without a usable Message-ID."""
    answered = answering.message_id if answering is not None else None
    if answering is None or answered is None or not _usable_id(answered):
        return ""
    refs = [r for r in answering.references if _usable_id(r)][-MAX_REFERENCES:]
    return _fold("In-Reply-To", [answered]) + _fold("References", [*refs, answered])


def _text_part(subtype: str, text: str) -> bytes:
    """A UTF-8 text part, quoted-printable: headers, blank line, body ending in CRLF."""
    lines = text.encode("utf-8").splitlines()  # \n, \r and \r\n, as EmailMessage.set_content splits
    body = binascii.b2a_qp(b"\r\n".join(lines) + b"\r\n", istext=True)
    head = f'Content-Type: text/{subtype}; charset="utf-8"{_CRLF}Content-Transfer-Encoding: quoted-printable{_CRLF}'
    return head.encode("ascii") + b"\r\n" + body


def _body(text: str, html: str | None) -> bytes:
    """MIME-Version and the content: plain text, or text and HTML as multipart/alternative."""
    if html is None:
        return b"MIME-Version: 1.0\r\n" + _text_part("plain", text)
    boundary = "=_omo_" + secrets.token_hex(12)  # "=_" never occurs in quoted-printable
    sep = f"\r\n--{boundary}\r\n".encode("ascii")
    return (
        f'MIME-Version: 1.0{_CRLF}Content-Type: multipart/alternative; boundary="{boundary}"{_CRLF}{_CRLF}'
        f"--{boundary}{_CRLF}"
    ).encode("ascii") + (
        _text_part("plain", text) + sep + _text_part("html", html) + f"\r\n--{boundary}--\r\n".encode("ascii")
    )


def machine_mail(
    smtp: SmtpConfig,
    loop_header: str,
    *,
    to: str,
    to_name: str = "",
    subject: str,
    message_id: str,
    now: datetime,
    kind: Literal["auto-replied", "auto-generated"],
    text: str,
    html: str | None = None,
    answering: ParsedMail | None = None,
    language: str | None = None,
) -> bytes:
    """The whole message, ready for SMTP: our headers, then ``text`` (and ``html`` as its alternative).

    ``to`` is one address; ``to_name`` its display name (may be empty). ``subject`` is made
    one line and cut to MAX_SUBJECT characters.
    """
    if not _usable_id(message_id):
        raise ValueError("not a message id")
    if language is not None and _TOKEN.fullmatch(language) is None:
        raise ValueError(f"not a language tag: {language!r}")
    head = (
        _from_line(smtp.from_name, smtp.from_address)
        + _fold("To", _mailbox(to_name, to))
        + _unstructured("Subject", one_line(subject)[:MAX_SUBJECT])
        + f"Date: {format_datetime(now)}{_CRLF}"
        + f"Message-ID: {message_id}{_CRLF}"
        + _threading(answering)
        + _machine_lines(kind, loop_header, smtp.from_address)
        + (f"Content-Language: {language}{_CRLF}" if language else "")
    )
    return head.encode("utf-8") + _body(text, html)  # only a non-ASCII address (RFC 6532) is not ASCII
