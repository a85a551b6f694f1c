"""What the sender wrote *now*: the new text of a mail, apart from its history.

Quoted replies, reply headers ("Op ... schreef ...:", Outlook's "Van:/Verzonden:"
blocks), signatures and legal disclaimers are split off before classifying, and
kept for the record. A forward is different: when someone forwards a mail to us,
the forwarded mail *is* the question, so its text counts (without its header
block). HTML-only mail is turned into text with inscriptis (the only importer).

Commands are the exception to that exception: :func:`own_text` is only what the
sender typed above the first history marker, so a forwarded digest full of
ready-made command lines commands nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .mail import ParsedMail

MAX_HTML_CHARS = 400_000
MAX_TEXT_CHARS = 20_000

# A line that starts the history of a reply.
_REPLY_HEADER = re.compile(
    r"^\s*(?:"
    r"op\s.{3,120}?\s(?:schreef|heeft\s.{0,80}?geschreven)(?:\s.{0,160})?|"
    r"on\s.{3,120}?\swrote(?:\s.{0,160})?|"
    r"am\s.{3,120}?\sschrieb(?:\s.{0,160})?|"
    r"le\s.{3,120}?\sa\sécrit(?:\s.{0,160})?"
    r")\s*:\s*$",
    re.IGNORECASE,
)
# Two-line variant: "Op di 3 nov. 2026 om 14:02 schreef Jan" / "<jan@x.nl>:"
_REPLY_HEADER_START = re.compile(r"^\s*(?:op|on)\s.{3,120}$", re.IGNORECASE)
_REPLY_HEADER_END = re.compile(
    r"(?:schreef|wrote|geschreven)\s*:?\s*$|^\s*<[^>]+>\s*(?:schreef|wrote)?\s*:\s*$", re.IGNORECASE
)

_SEPARATORS_REPLY = re.compile(
    r"^\s*-{2,}\s*(?:oorspronkelijk bericht|original message|origineel bericht|ursprüngliche nachricht)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_SEPARATORS_FORWARD = re.compile(
    r"^\s*(?:-{2,}\s*(?:doorgestuurd bericht|forwarded message|doorgestuurde e-?mail)\s*-{2,}|"
    r"begin (?:doorgestuurd bericht|forwarded message)\s*:?|"
    r"(?:doorgestuurd bericht|forwarded message)\s*:)\s*$",
    re.IGNORECASE,
)
_OUTLOOK_FIELD = re.compile(
    r"^\s*\**\s*(van|from|verzonden|sent|datum|date|aan|to|cc|onderwerp|subject|beantwoorden|reply-to)\s*\**\s*:",
    re.IGNORECASE,
)
_SIGNATURE = re.compile(
    r"^\s*(?:-- ?|__+|"
    r"verzonden (?:vanaf|met|vanuit) .{0,40}|verstuurd (?:vanaf|met|vanuit) .{0,40}|sent from my .{0,40}|"
    r"get outlook for .{0,30}|outlook voor .{0,30} downloaden)\s*$",
    re.IGNORECASE,
)
_CLOSING = re.compile(
    r"^\s*(?:met\s+)?(?:vriendelijke|hartelijke|collegiale|beste|warme)\s+groet(?:en)?\s*,?\s*$|"
    r"^\s*(?:mvg|m\.v\.g\.|groet(?:en|jes)?|gr\.?|hartelijke dank(?: alvast)?|alvast bedankt|"
    r"(?:kind|best|warm)\s+regards|regards|best wishes|cheers|sincerely|yours sincerely|hoogachtend)\s*,?\s*$",
    re.IGNORECASE,
)
_DISCLAIMER = re.compile(
    r"^\s*(?:disclaimer\b|dit (?:e-?mail)?bericht (?:is|kan|bevat)|de informatie (?:in|verzonden met) dit|"
    r"this (?:e-?mail|message)(?: and any attachments?)? (?:is|may|contains)|"
    r"aan dit bericht kunnen geen rechten|no rights can be derived|"
    r"indien (?:u )?dit bericht (?:ten onrechte|niet voor u)|if you (?:are not|have received) )",
    re.IGNORECASE,
)
# What a line must start with for any of the patterns above to match it: a cheap first test, so that
# the ordinary lines of a long mail cost one regex each (tests/test_fast_paths.py checks that these are
# the patterns' own beginnings). _MAY_START_HISTORY: the separators, reply headers, Outlook fields and
# quotes of _history_start; _MAY_END_TEXT: _SIGNATURE, _CLOSING and _DISCLAIMER.
_MAY_START_HISTORY = re.compile(
    r"\s*(?:[-*>]|begin|doorgestuurd|forwarded|op|on|am|le|van|from|verzonden|sent|datum|date|aan|to|cc|"
    r"onderwerp|subject|beantwoorden|reply-to)",
    re.IGNORECASE,
)
_MAY_END_TEXT = re.compile(
    r"\s*(?:[-_]|verzonden|verstuurd|sent|get|outlook|met|vriendelijke|hartelijke|collegiale|best|warm|mvg|"
    r"m\.v\.g\.|gr|alvast|kind|regards|cheers|sincerely|yours|hoogachtend|disclaimer|dit|de|this|aan|no|"
    r"indien|if)",
    re.IGNORECASE,
)
_FWD_SUBJECT = re.compile(r"^\s*(?:fwd?|fw|doorst|tr|wg)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class SplitText:
    """The new text and what was split off, in reading order."""

    new: str
    quoted: str = ""
    signature: str = ""
    is_forward: bool = False

    @property
    def stripped(self) -> str:
        return "\n".join(p for p in (self.signature, self.quoted) if p)


def html_to_text(html: str) -> str:
    from inscriptis import get_text

    try:
        return str(get_text(html[:MAX_HTML_CHARS]))
    except Exception:  # inscriptis/lxml on hostile markup: fall back to tag removal
        return re.sub(r"<[^>]+>", " ", html[:MAX_HTML_CHARS])


def body_text(mail: ParsedMail) -> str:
    """The readable body: text/plain, or the HTML part rendered as text."""
    text = mail.text_plain
    if not text.strip() and mail.text_html.strip():
        text = html_to_text(mail.text_html)
    return text.replace("\r\n", "\n").replace("\r", "\n")[:MAX_TEXT_CHARS]


def _outlook_block_at(lines: list[str], i: int) -> int:
    """If an Outlook-style header block starts at line i, return its length, else 0."""
    fields: set[str] = set()
    j = i
    while j < len(lines) and j < i + 8:
        m = _OUTLOOK_FIELD.match(lines[j])
        if m:
            fields.add(m.group(1).lower())
            j += 1
        elif not lines[j].strip() and j > i:
            break
        elif j > i and fields:
            j += 1  # a wrapped value line
        else:
            break
    has_from = bool(fields & {"van", "from"})
    has_other = len(fields & {"verzonden", "sent", "datum", "date", "aan", "to", "onderwerp", "subject"}) >= 2
    return j - i if has_from and has_other else 0


def _wrapped_reply_header_at(lines: list[str], i: int) -> int:
    """If a reply header wrapped over two or three lines starts at line i, return its length, else 0.

    Mail programs wrap a long "Op <datum> schreef <naam> <adres>:" wherever it is
    too long, often inside the address; joined, it is the one-line header. The
    last line must hold the address, so an ordinary sentence that starts with "Op"
    and ends in a colon a line or two later is not taken for history."""
    if not _REPLY_HEADER_START.match(lines[i]) or len(lines[i]) >= 160:
        return 0
    if i + 1 < len(lines) and _REPLY_HEADER_END.search(lines[i + 1]):
        return 2
    for length in (2, 3):
        part = lines[i : i + length]
        if len(part) == length and "@" in part[-1] and _REPLY_HEADER.match(" ".join(p.strip() for p in part)):
            return length
    return 0


def _history_start(lines: list[str]) -> tuple[int, str, int]:
    """(line index, kind 'reply'|'forward'|'quote', header length) of the first history marker."""
    for i, line in enumerate(lines):
        if not _MAY_START_HISTORY.match(line):
            continue
        if _SEPARATORS_FORWARD.match(line):
            return i, "forward", 1
        if _SEPARATORS_REPLY.match(line):
            return i, "reply", 1
        if _REPLY_HEADER.match(line):
            return i, "reply", 1
        wrapped = _wrapped_reply_header_at(lines, i)
        if wrapped:
            return i, "reply", wrapped
        block = _outlook_block_at(lines, i)
        if block:
            return i, "outlook", block
        if line.lstrip().startswith(">") and any(x.strip() for x in lines[i:]):
            # a run of quoted lines; inline replies below it are rare in this mailbox
            return i, "quote", 0
    return len(lines), "", 0


def _cut_signature(lines: list[str]) -> tuple[list[str], list[str]]:
    for i, line in enumerate(lines):
        if i == 0 or not _MAY_END_TEXT.match(line):
            continue
        if _SIGNATURE.match(line) or _CLOSING.match(line) or _DISCLAIMER.match(line):
            return lines[:i], lines[i:]
    return lines, []


def _strip_outlook_headers(lines: list[str]) -> list[str]:
    i = 0
    while i < len(lines) and (not lines[i].strip() or _OUTLOOK_FIELD.match(lines[i])):
        i += 1
    return lines[i:]


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def split_text(text: str, subject: str = "", depth: int = 0) -> SplitText:
    """Split ``text`` into the new text and the history below it."""
    lines = _lines(text)
    start, kind, header_len = _history_start(lines)
    own, history = lines[:start], lines[start:]
    own, signature = _cut_signature(own)
    forwarded = kind == "forward" or (kind == "outlook" and bool(_FWD_SUBJECT.match(subject)))
    new = "\n".join(own).strip()
    if forwarded and depth < 3:
        inner = _strip_outlook_headers(history[header_len:])
        inner_split = split_text("\n".join(inner), "", depth + 1)
        new = (new + "\n\n" + inner_split.new).strip()
        quoted = inner_split.quoted
        sig = "\n".join([*signature, inner_split.signature]).strip()
        return SplitText(new, quoted, sig, True)
    return SplitText(new, "\n".join(history).strip(), "\n".join(signature).strip(), False)


def new_text(mail: ParsedMail) -> SplitText:
    return split_text(body_text(mail), mail.subject)


def own_text(text: str) -> str:
    """What the sender typed themselves: everything above the first quote, reply or forward marker.

    Unlike :attr:`SplitText.new` a forward does not count: someone else wrote it, and a
    forwarded digest is full of ready-made command lines that the sender never meant to
    send. A signature does count; the sender wrote it, and a command below "Groet," is theirs."""
    lines = _lines(text)
    start, _, _ = _history_start(lines)
    return "\n".join(lines[:start]).strip()


_NL_WORDS = frozenset(
    [
        "de",
        "het",
        "een",
        "en",
        "van",
        "ik",
        "je",
        "u",
        "wij",
        "we",
        "is",
        "zijn",
        "niet",
        "op",
        "te",
        "dat",
        "die",
        "voor",
        "met",
        "er",
        "maar",
        "ook",
        "bij",
        "naar",
        "heeft",
        "hebben",
        "wordt",
        "worden",
        "graag",
        "kunt",
        "uw",
        "onze",
        "ons",
        "deze",
        "dit",
        "wat",
        "gemeente",
        "vandaag",
        "morgen",
    ]
)
_EN_WORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "of",
        "i",
        "you",
        "we",
        "is",
        "are",
        "not",
        "on",
        "to",
        "that",
        "this",
        "for",
        "with",
        "there",
        "but",
        "also",
        "at",
        "have",
        "has",
        "be",
        "will",
        "would",
        "please",
        "could",
        "can",
        "our",
        "your",
        "today",
        "tomorrow",
        "council",
        "municipality",
    ]
)
# What language() counts as a word. _letter_runs finds the same words faster; tests/test_text.py checks
# that both agree on every character.
_WORD = re.compile(r"[a-zà-ÿ]+")
# _WORD's letters are all Latin-1, where a code point is its byte: a translation table that keeps those
# bytes and turns every other byte into a space, and the word lists as bytes.
_LETTERS = bytes(range(ord("a"), ord("z") + 1)) + bytes(range(ord("à"), ord("ÿ") + 1))
_LETTERS_ONLY = bytes(b if b in _LETTERS else ord(" ") for b in range(256))
_NL_BYTES = frozenset(word.encode("latin-1") for word in _NL_WORDS)
_EN_BYTES = frozenset(word.encode("latin-1") for word in _EN_WORDS)


def _letter_runs(text: str) -> list[bytes]:
    """``_WORD.findall(text)``, Latin-1 encoded, at about half the cost of the regular expression.

    Characters beyond Latin-1 are no letters of _WORD, so encoding each as ``?`` (no letter either)
    leaves the words as they are; the byte table then blanks every other non-letter, and a plain
    split (in C, like the encoding and the table) gives the runs of letters."""
    return text.encode("latin-1", "replace").translate(_LETTERS_ONLY).split()


def language(text: str) -> str:
    """'en' when the text reads as English, else 'nl' (the default of this mailbox)."""
    words = _letter_runs(text.lower()[:4000])
    # counted in C (a Python loop per word cost 0.5 ms); a set test per word is cheaper than a Counter
    nl = sum(map(_NL_BYTES.__contains__, words))
    en = sum(map(_EN_BYTES.__contains__, words))
    return "en" if en > nl * 1.2 and en >= 3 else "nl"


_REPLY_SUBJECT = re.compile(r"^\s*(?:re|antw|aw|sv|vs|ref)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)


def decision_subject(subject: str) -> str:
    """The subject as far as it is new: a reply's subject ("Re: ...") repeats the old
    conversation (often "SPOED ... vanavond" from last week), so it does not decide."""
    return "" if _REPLY_SUBJECT.match(subject or "") else subject
