"""One parsed mail, as the rest of omo-mailbot sees it.

This is the only module that imports :mod:`mailparser`. It reads raw bytes with
mail-parser and falls back to the standard library's compat32 parser for what
mail-parser cannot read. Every header access goes through one guarded helper,
because malformed headers raise lazily in several parsers. What cannot be read
at all raises :class:`ParseError`; the caller stores the raw bytes with it.
"""

from __future__ import annotations

import contextlib
import email
import email.header
import email.message
import email.utils
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import ParseError

_ADDR = re.compile(
    r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_MSGID = re.compile(r"<[^<>\s]+>")
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Everything str.splitlines() breaks on. Left in a decoded Subject or display name, any of them could end a
# header line of our reply or duty alert (outgoing.py makes every value one line with one_line()).
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_COMMENT = re.compile(r"\([^()]*\)")
_ANGLE = re.compile(r"<([^<>]*)>")

# mail-parser warns for every part type it does not render; that is noise here.
logging.getLogger("mailparser").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Address:
    name: str
    addr: str

    @property
    def local(self) -> str:
        return self.addr.rsplit("@", 1)[0]

    @property
    def domain(self) -> str:
        return self.addr.rsplit("@", 1)[-1]


def valid_address(addr: str) -> bool:
    return bool(_ADDR.match(addr)) and len(addr) <= 254


def normalise_address(addr: str) -> str:
    """``addr`` as one mailbox: lower-cased, without a ``+tag`` in the local part.

    ``victim+1@x`` and ``victim+2@x`` land in the same mailbox, so rate limits, bounce
    blocks and the own/roster guards must see them as ``victim@x``; otherwise every tag
    is a fresh identity. A local part that is only a tag (``+31612@sms.example``) is kept.
    """
    lower = addr.strip().lower()
    local, at, domain = lower.rpartition("@")
    if not at:
        return lower
    base = local.split("+", 1)[0]
    return f"{base}@{domain}" if base else lower


@dataclass(frozen=True)
class ParsedMail:
    """The fields the decision needs, decoded; header names are lower-case."""

    headers: tuple[tuple[str, str], ...]
    subject: str = ""
    message_id: str | None = None
    from_: Address | None = None
    reply_to: tuple[Address, ...] = ()
    date: datetime | None = None
    text_plain: str = ""
    text_html: str = ""
    content_type: str = "text/plain"
    part_types: tuple[str, ...] = ()
    report_type: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    attachment_names: tuple[str, ...] = ()
    defects: tuple[str, ...] = ()
    parser: str = "mail-parser"
    size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    @property
    def return_path(self) -> str | None:
        """The envelope sender from Return-Path: None when absent, "" for ``<>``."""
        raw = self.header("return-path")
        if raw is None:
            return None
        # Comments are allowed around the path (``<> (null sender)``); they must not hide the null sender.
        text = raw
        while (uncommented := _COMMENT.sub(" ", text)) != text:
            text = uncommented
        inner = _ANGLE.search(text)
        return (inner.group(1) if inner else text).strip().strip("<>").strip()


def clean(text: str) -> str:
    """Text that any database and encoder accepts: no lone surrogates, no NUL."""
    try:
        # compat32 keeps undecodable header bytes as surrogate escapes: most are raw UTF-8
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "")


def one_line(text: str) -> str:
    """``text`` with every character str.splitlines() breaks on turned into a space.

    Decoded RFC 2047 words can carry U+0085, U+2028, U+2029, \\x0b, \\x0c or \\x1c..\\x1e. A mail
    reader may break a header line at any of them, so each costs a space in what we write
    rather than opening the way to an injected header.
    """
    return _LINE_BREAKS.sub(" ", text)


def decode_header(value: Any) -> str:
    """Decode RFC 2047 words; never raise; line breaks become spaces; strip control characters."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        try:
            text = str(value)
        except Exception:  # a Header with undecodable chunks
            text = value.encode()
    else:
        text = str(value)
    if "=?" in text:  # no encoded word, nothing to decode (and the decoder would give the text back)
        with contextlib.suppress(Exception):  # unknown charset, broken encoded word: keep the raw text
            text = str(email.header.make_header(email.header.decode_header(text)))
    # clean() may turn surrogate-escaped bytes into U+0085 or U+2028, so the line breaks go after it.
    return _CTRL.sub("", one_line(clean(text))).strip()


def _raw_address_header(value: Any) -> str:
    """An address header as sent (encoded words left alone), unfolded, without control characters."""
    text = value if isinstance(value, str) else decode_header(value)
    return _CTRL.sub("", one_line(clean(text)))


def parse_addresses(values: list[str]) -> tuple[Address, ...]:
    out: list[Address] = []
    try:
        pairs = email.utils.getaddresses(values)
    except Exception:
        return ()
    for name, addr in pairs:
        addr = addr.strip()
        if addr:
            out.append(Address(decode_header(name), addr))
    return tuple(out)


def _msgids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSGID.findall(value or ""))


def _message_headers(msg: email.message.Message) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for key, value in msg.raw_items():
        out.append((str(key).strip().lower(), decode_header(value)))
    return tuple(out)


def _walk_types(msg: email.message.Message) -> tuple[tuple[str, ...], tuple[str, ...]]:
    types: list[str] = []
    names: list[str] = []
    for count, part in enumerate(msg.walk()):
        if count > 500:
            break
        try:
            types.append(part.get_content_type())
            fname = part.get_filename()
        except Exception:
            continue
        if fname:
            names.append(decode_header(fname))
    return tuple(types), tuple(names)


def _stdlib_text(msg: email.message.Message) -> tuple[str, str]:
    plain, html = "", ""
    for count, part in enumerate(msg.walk()):
        if count > 500 or (plain and html):
            break
        try:
            if part.is_multipart() or part.get_filename():
                continue
            ctype = part.get_content_type()
            if ctype not in ("text/plain", "text/html"):
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            charset = part.get_content_charset() or "utf-8"
            try:
                text = payload.decode(charset, errors="replace")
            except LookupError:
                text = payload.decode("utf-8", errors="replace")
        except Exception:
            continue
        if ctype == "text/plain" and not plain:
            plain = text
        elif ctype == "text/html" and not html:
            html = text
    return plain, html


def _date(msg: email.message.Message) -> datetime | None:
    raw = msg.get("date")
    if not raw:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(decode_header(raw))
    except Exception:
        return None
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _build(
    msg: email.message.Message, raw: bytes, plain: str, html: str, parser: str, defects: tuple[str, ...]
) -> ParsedMail:
    headers = _message_headers(msg)

    def values(name: str) -> list[str]:
        return [v for k, v in headers if k == name]

    def addresses(name: str) -> tuple[Address, ...]:
        # Split addresses BEFORE decoding RFC 2047 words: a decoded display name like
        # "Bob <other@example>" must never become the address (it would redirect replies).
        return parse_addresses([_raw_address_header(v) for k, v in msg.raw_items() if str(k).strip().lower() == name])

    from_list = addresses("from")
    types, names = _walk_types(msg)
    try:
        report_type = msg.get_param("report-type") if msg.get_content_type() == "multipart/report" else None
    except Exception:
        report_type = None
    mid = _msgids(next(iter(values("message-id")), None))
    return ParsedMail(
        headers=headers,
        subject=next(iter(values("subject")), ""),
        message_id=mid[0] if mid else None,
        from_=from_list[0] if from_list else None,
        reply_to=addresses("reply-to"),
        date=_date(msg),
        text_plain=clean(plain),
        text_html=clean(html),
        content_type=msg.get_content_type(),
        part_types=types,
        report_type=str(report_type).lower() if isinstance(report_type, str) else None,
        in_reply_to=_msgids(next(iter(values("in-reply-to")), None)),
        references=tuple(r for v in values("references") for r in _msgids(v)),
        attachment_names=names,
        defects=defects,
        parser=parser,
        size=len(raw),
    )


def _with_mailparser(raw: bytes) -> ParsedMail:
    import mailparser

    parsed = mailparser.parse_from_bytes(raw)
    msg = parsed.message
    plain_parts = [p for p in parsed.text_plain if isinstance(p, str)]
    html_parts = [p for p in parsed.text_html if isinstance(p, str)]
    plain = plain_parts[0] if plain_parts else ""
    html = html_parts[0] if html_parts else ""
    defects = tuple(sorted({str(d) for d in (parsed.defects_categories or [])}))
    return _build(msg, raw, plain, html, "mail-parser", defects)


def _with_stdlib(raw: bytes) -> ParsedMail:
    msg = email.message_from_bytes(raw)
    plain, html = _stdlib_text(msg)
    defects = tuple(sorted({type(d).__name__ for d in msg.defects}))
    return _build(msg, raw, plain, html, "email", defects)


def parse(raw: bytes) -> ParsedMail:
    """Parse raw RFC 5322 bytes; mail-parser first, the stdlib as the fallback."""
    if not raw or not raw.strip():
        raise ParseError("empty message")
    errors: list[str] = []
    for reader in (_with_mailparser, _with_stdlib):
        try:
            parsed = reader(raw)
        except RecursionError:
            errors.append(f"{reader.__name__}: nesting too deep")
            continue
        except Exception as exc:
            errors.append(f"{reader.__name__}: {type(exc).__name__}: {exc}")
            continue
        if not parsed.headers:
            errors.append(f"{reader.__name__}: no headers found")
            continue
        if errors:
            parsed.extra["fallback_reason"] = errors[0]
        return parsed
    raise ParseError("; ".join(errors))
