"""The brakes that keep omo-mailbot from answering machines.

:func:`check` looks at one :class:`~omo_mailbot.mail.ParsedMail` and returns every
reason not to answer it. It is pure: no database, no clock, no I/O, and it reads
headers and MIME structure only, never the body. Rate limits and hard-bounce
blocks need the database and live elsewhere.

Each :class:`Reason` says one of two things:

* ``automated=True``  -- this alone shows a machine wrote the mail (bounce,
  auto-reply, list or newsletter traffic, our own loop, spam). The mail is
  stored and counted but never becomes a case.
* ``automated=False`` -- we may not answer, but a person may well have written
  it (a noreply alert system, a contact person, a sender who asked not to get
  auto-replies). The content still decides acute or preparation.

The rules are the union of what Dovecot Pigeonhole (vacation), Zammad, Znuny,
Request Tracker, FreeScout and Mailman check; docs/autoreply-policy.md gives
the table with sources and the choices made where they disagree. Headers are
matched by name, from fixed lists; no rule scans "any header", so test-only
headers such as ``X-Test-Expect`` never match anything.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import ROBOT_LOCAL_PARTS
from .mail import Address, ParsedMail, normalise_address, valid_address

if TYPE_CHECKING:  # only for the type of from_config's argument; no runtime import
    from .config import AutoReplyConfig

__all__ = ["GuardPolicy", "GuardResult", "Reason", "check"]


# --- public values ------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """One reason not to answer: a stable ``code``, a readable ``detail``."""

    code: str
    detail: str
    automated: bool


# Robot local parts whose mail is machine-written (bounces, list software,
# system daemons). A From matching one of these -- and also a glob of the
# policy -- makes the robot-sender reason automated. Every other robot match
# (noreply-style senders, anything an operator adds, a match only on the
# envelope sender or the reply target) forbids the reply but lets the content
# decide.
_MACHINE_LOCAL_PARTS: tuple[str, ...] = (
    "mailer-daemon",
    "postmaster",
    "listserv",
    "majordomo",
    "mailman",
    "root",
    "owner-*",
    "*-owner",
    "*-request",
    "*-bounce",
    "*-bounces",
    "bounce-*",
    "bounces",
)


@dataclass(frozen=True)
class GuardPolicy:
    """What :func:`check` needs to know about us. Addresses and globs are lower-cased."""

    own_addresses: frozenset[str]
    roster_addresses: frozenset[str] = frozenset()
    robot_local_parts: tuple[str, ...] = ROBOT_LOCAL_PARTS
    loop_header: str = "X-Omo-Loop"
    auto_reply_msgid_prefix: str = "omo-reply."

    def __post_init__(self) -> None:
        object.__setattr__(self, "own_addresses", _lower_set(self.own_addresses))
        object.__setattr__(self, "roster_addresses", _lower_set(self.roster_addresses))
        object.__setattr__(
            self,
            "robot_local_parts",
            tuple(p.strip().lower() for p in self.robot_local_parts if p.strip()),
        )
        object.__setattr__(self, "auto_reply_msgid_prefix", self.auto_reply_msgid_prefix.lower())

    @classmethod
    def from_config(cls, cfg: AutoReplyConfig, roster_addresses: Iterable[str] = ()) -> GuardPolicy:
        return cls(
            own_addresses=frozenset(cfg.own_addresses),
            roster_addresses=frozenset(roster_addresses),
            robot_local_parts=tuple(cfg.robot_local_parts),
            loop_header=cfg.loop_header,
        )


@dataclass(frozen=True)
class GuardResult:
    reasons: tuple[Reason, ...]
    reply_to: Address | None

    @property
    def automated(self) -> bool:
        """A machine wrote this mail: store and count it, never make it a case."""
        return any(r.automated for r in self.reasons)

    @property
    def may_reply(self) -> bool:
        """Nothing forbids an automatic answer (rate limits are checked elsewhere)."""
        return not self.reasons

    @property
    def blocked_by(self) -> str | None:
        if not self.reasons:
            return None
        return "; ".join(f"{r.code}: {r.detail}" for r in self.reasons)


# --- header vocabularies (see docs/autoreply-policy.md for the sources) ----------

_PRECEDENCE_BLOCK = frozenset({"bulk", "list", "junk", "auto_reply", "auto-reply"})  # the hyphen is seen too

# RFC 2369, RFC 2919, RFC 8058; Mailing-List is what Znuny checks (ezmlm and others).
_LIST_HEADERS = (
    "list-id",
    "list-help",
    "list-subscribe",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-post",
    "list-owner",
    "list-archive",
    "mailing-list",
)

# Sending-platform markers: they show mail left through a bulk/ESP platform, which
# also carries one-to-one transactional and alert mail, so they forbid the reply
# only. Real newsletters carry List-Unsubscribe and are caught as list traffic.
_BULK_HEADERS = ("feedback-id", "x-csa-complaints")

_ARS_BLOCK = frozenset({"all", "oof", "autoreply", "dr"})
# MS-OXCMAIL says comma-separated, but senders also write "OOF AutoReply" or "RN; OOF".
_ARS_SEPARATORS = re.compile(r"[,;\s]+")

# Present at all -> an auto-responder wrote it (FreeScout, Exim wiki, Discourse).
_AUTORESPONDER_HEADERS = (
    "x-autoreply",
    "x-auto-reply",
    "x-autorespond",
    "x-autoresponder",
    "x-autoresponse",
    "x-autoreply-from",
    "x-mail-autoreply",
)

_OOF_SUBJECT = re.compile(
    r"^\s*(?:automatisch antwoord|automatic reply|out of office(?: autoreply)?|afwezig"
    r"|automatische antwort|r[ée]ponse automatique)\s*:",
    re.IGNORECASE,
)

# Exchange stamps this on messages its own agents generate. "Mailbox Rules Agent"
# also produces rule-based forwards of a person's mail, so that value alone forbids
# the reply only; Exchange OOFs are caught as automated by the Rules-Loop +
# X-Auto-Response-Suppress pair and by their subject.
_EXCHANGE_SOURCE_HUMAN_POSSIBLE = frozenset({"mailbox rules agent"})

# iTIP methods (RFC 5546) that only occur as an answer within a scheduling exchange.
_CALENDAR_REPLY_METHODS = frozenset({"reply", "counter", "refresh", "declinecounter"})
_CALENDAR_REPLY_SUBJECT = re.compile(
    r"^\s*(?:accepted|declined|tentative|tentatively accepted|new time proposed"
    r"|geaccepteerd|geweigerd|afgewezen|voorlopig(?: geaccepteerd)?"
    r"|onder voorbehoud(?: geaccepteerd)?|nieuwe tijd voorgesteld)\s*:",
    re.IGNORECASE,
)
_METHOD_PARAM = re.compile(r"(?:^|;)\s*method\s*=\s*\"?([A-Za-z-]+)", re.IGNORECASE)

_DELIVERY_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status"})
_RECEIPT_PARTS = frozenset({"message/disposition-notification", "message/global-disposition-notification"})

_ADDR_TOKEN = re.compile(r"[^\s<>,;:\"'()\[\]]+@[^\s<>,;:\"'()\[\]]+")
_COMMENT = re.compile(r"\([^()]*\)")
_MAX_DETAIL_VALUE = 120


# --- helpers --------------------------------------------------------------------


def _lower_set(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values if v and v.strip())


def _mailboxes(addresses: Iterable[str]) -> frozenset[str]:
    """``addresses`` as mailboxes (lower-cased, ``+tag`` dropped), for matching, not for display."""
    return frozenset(normalise_address(a) for a in addresses if a.strip())


def _clip(value: str) -> str:
    value = " ".join(value.split())
    if len(value) > _MAX_DETAIL_VALUE:
        return value[: _MAX_DETAIL_VALUE - 3] + "..."
    return value


def _first_token(value: str) -> str:
    """The value before any ``;`` parameter, comments removed, lower-cased."""
    return _COMMENT.sub("", value).split(";", 1)[0].strip().lower()


def _local(addr: str) -> str:
    return addr.rsplit("@", 1)[0].strip().lower()


def _fold_separators(text: str) -> str:
    return text.replace(".", "-").replace("_", "-")


def _matches(local: str, globs: Iterable[str]) -> str | None:
    """The first glob matching ``local`` or its part before a ``+tag`` (VERP), else None.

    For the no-reply family (globs containing ``reply``) the separators ``.``, ``_`` and
    ``-`` are interchangeable, so ``no.reply`` and ``do_not.reply`` count like ``no-reply``:
    whatever the spelling, nobody reads answers sent there. Other globs keep their
    separator, because a dot is ordinary in people's names (``owner.jansen``, ``j.root``).
    """
    candidates = {local, local.split("+", 1)[0]}
    folded = {_fold_separators(c) for c in candidates}
    for glob in globs:
        if any(fnmatch.fnmatchcase(c, glob) for c in candidates):
            return glob
        if "reply" in glob and any(fnmatch.fnmatchcase(c, _fold_separators(glob)) for c in folded):
            return glob
    return None


def _ars_tokens(value: str) -> set[str]:
    """The X-Auto-Response-Suppress values, lower-cased, however they are separated."""
    return {t.lower() for t in _ARS_SEPARATORS.split(value) if t}


def _msgid_local(msgid: str) -> str:
    return msgid.strip().strip("<>").rsplit("@", 1)[0].lower()


def _calendar_method(mail: ParsedMail) -> str | None:
    """The iTIP METHOD when the top-level Content-Type is text/calendar, else None.

    ParsedMail keeps no per-part headers, so the method of a text/calendar part
    inside a multipart is not visible here; :func:`check` then falls back on the
    subject that calendar clients give their responses.
    """
    if mail.content_type != "text/calendar":
        return None
    found = _METHOD_PARAM.search(mail.header("content-type") or "")
    return found.group(1).lower() if found else None


class _Findings:
    """Reasons in first-seen order; a second finding with the same code is merged."""

    def __init__(self) -> None:
        self._order: list[str] = []
        self._details: dict[str, list[str]] = {}
        self._automated: dict[str, bool] = {}

    def add(self, code: str, detail: str, automated: bool) -> None:
        if code not in self._details:
            self._order.append(code)
            self._details[code] = []
            self._automated[code] = False
        if detail not in self._details[code]:
            self._details[code].append(detail)
        self._automated[code] = self._automated[code] or automated

    def reasons(self) -> tuple[Reason, ...]:
        return tuple(Reason(code, ", ".join(self._details[code]), self._automated[code]) for code in self._order)


def _reply_target(mail: ParsedMail) -> Address | None:
    for addr in mail.reply_to:
        if valid_address(addr.addr):
            return addr
    if mail.from_ is not None and valid_address(mail.from_.addr):
        return mail.from_
    return None


# --- the rules --------------------------------------------------------------------


def _auto_submitted(mail: ParsedMail, out: _Findings) -> None:
    for value in mail.header_all("auto-submitted"):
        token = _first_token(value)
        if token == "no":
            continue
        # auto-generated: alert systems use it for real incidents -> reply blocked only.
        out.add("auto-submitted", f"Auto-Submitted: {_clip(value) or '(empty)'}", automated=token != "auto-generated")


def _precedence(mail: ParsedMail, out: _Findings) -> None:
    for name, label in (("precedence", "Precedence"), ("x-precedence", "X-Precedence")):
        for value in mail.header_all(name):
            # Some senders quote the value (Precedence: "bulk"); the quotes change nothing.
            words = _first_token(value).replace('"', " ").replace("'", " ").split()
            if words and words[0] in _PRECEDENCE_BLOCK:
                out.add("precedence", f"{label}: {_clip(value)}", automated=True)


def _lists_and_bulk(mail: ParsedMail, out: _Findings) -> None:
    present = [h for h in _LIST_HEADERS if mail.has_header(h)]
    if present:
        first = mail.header(present[0]) or ""
        names = ", ".join(_title(h) for h in present)
        out.add("list-header", f"{names} ({_title(present[0])}: {_clip(first)})", automated=True)
    for name in _BULK_HEADERS:
        value = mail.header(name)
        if value is not None:
            out.add("bulk-sender", f"{_title(name)}: {_clip(value)}", automated=False)


_TITLES = {
    "list-id": "List-Id",
    "feedback-id": "Feedback-ID",
    "x-csa-complaints": "X-CSA-Complaints",
}


def _title(name: str) -> str:
    """A lower-case header name as people write it, for details."""
    return _TITLES.get(name, "-".join(part.capitalize() for part in name.split("-")))


def _suppress(mail: ParsedMail, out: _Findings) -> None:
    for value in mail.header_all("x-auto-response-suppress"):
        if _ars_tokens(value) & _ARS_BLOCK:
            out.add("x-auto-response-suppress", f"X-Auto-Response-Suppress: {_clip(value)}", automated=False)
    for value in mail.header_all("x-ack"):
        if _first_token(value) == "no":
            out.add("no-ack", f"X-Ack: {_clip(value)}", automated=False)
    if mail.has_header("x-no-ack"):
        out.add("no-ack", "X-No-Ack present", automated=False)


def _loops(mail: ParsedMail, policy: GuardPolicy, out: _Findings) -> None:
    own = _mailboxes(policy.own_addresses)
    for value in mail.header_all("x-loop"):
        named = _mailboxes(_ADDR_TOKEN.findall(value))
        if named & own:
            out.add("x-loop", f"X-Loop: {_clip(value)}", automated=True)
    if policy.loop_header and mail.has_header(policy.loop_header.lower()):
        value = mail.header(policy.loop_header.lower()) or ""
        out.add("own-loop-header", f"{policy.loop_header}: {_clip(value)}", automated=True)
    ids = (*mail.in_reply_to, *mail.references)
    prefix = policy.auto_reply_msgid_prefix
    if prefix and ids and all(_msgid_local(i).startswith(prefix) for i in ids):
        # Not automated: Outlook puts only the parent's id in References, so a person
        # answering our auto-reply looks exactly like this. We never answer it (one
        # auto-reply per thread), but the content still decides.
        out.add(
            "reply-to-our-auto-reply",
            f"every In-Reply-To/References id is one of our auto-replies ({_clip(ids[0])})",
            automated=False,
        )


def _vendor(mail: ParsedMail, out: _Findings) -> None:
    for name in _AUTORESPONDER_HEADERS:
        value = mail.header(name)
        if value is not None:
            out.add("vendor-autoreply", f"{_title(name)}: {_clip(value)}", automated=True)
    fc = mail.header("x-fc-machinegenerated")
    if fc is not None and fc.strip().lower().startswith("true"):
        out.add("vendor-autoreply", f"X-FC-Machinegenerated: {_clip(fc)}", automated=True)
    post_class = mail.header("x-post-messageclass")
    if post_class is not None and "autoresponder" in post_class.lower():
        out.add("vendor-autoreply", f"X-POST-MessageClass: {_clip(post_class)}", automated=True)
    if any(v.strip().lower() == "autoresponder" for v in mail.header_all("delivered-to")):
        out.add("vendor-autoreply", "Delivered-To: Autoresponder", automated=True)
    rules_loop = mail.header("x-ms-exchange-inbox-rules-loop")
    suppress_all = any("all" in _ars_tokens(v) for v in mail.header_all("x-auto-response-suppress"))
    if rules_loop is not None and suppress_all:
        out.add(
            "vendor-autoreply",
            "Exchange out-of-office (X-MS-Exchange-Inbox-Rules-Loop with X-Auto-Response-Suppress: All)",
            automated=True,
        )
    source = mail.header("x-ms-exchange-generated-message-source")
    if source is not None:
        human_possible = source.strip().lower() in _EXCHANGE_SOURCE_HUMAN_POSSIBLE
        out.add(
            "vendor-autoreply", f"X-MS-Exchange-Generated-Message-Source: {_clip(source)}", automated=not human_possible
        )
    if _OOF_SUBJECT.match(mail.subject):
        out.add("vendor-autoreply", f"out-of-office subject: {_clip(mail.subject)}", automated=True)


def _envelope_and_reports(mail: ParsedMail, out: _Findings) -> None:
    if mail.return_path == "":
        out.add("null-sender", "Return-Path: <>", automated=True)
    top = mail.content_type
    if top == "multipart/report":
        kind = mail.report_type or ""
        if kind in ("delivery-status", "global-delivery-status"):
            out.add("delivery-report", f"multipart/report; report-type={kind}", automated=True)
        elif kind in ("disposition-notification", "global-disposition-notification"):
            out.add("read-receipt", f"multipart/report; report-type={kind}", automated=True)
        else:
            out.add("machine-report", f"multipart/report; report-type={kind or '(none)'}", automated=True)
    elif top in _DELIVERY_PARTS:
        out.add("delivery-report", f"top-level {top}", automated=True)
    elif top in _RECEIPT_PARTS:
        out.add("read-receipt", f"top-level {top}", automated=True)


def _calendar(mail: ParsedMail, out: _Findings) -> None:
    if "text/calendar" not in mail.part_types:
        return
    method = _calendar_method(mail)
    if method in _CALENDAR_REPLY_METHODS:
        out.add("calendar-reply", f"text/calendar; method={method.upper()}", automated=True)
    elif method is None and _CALENDAR_REPLY_SUBJECT.match(mail.subject):
        out.add("calendar-reply", f"text/calendar part with response subject: {_clip(mail.subject)}", automated=True)


def _senders(mail: ParsedMail, policy: GuardPolicy, target: Address | None, out: _Findings) -> None:
    rp = mail.return_path
    # Own and roster addresses: From, every Reply-To, the envelope sender.
    people: list[tuple[str, str]] = []
    if mail.from_ is not None:
        people.append(("From", mail.from_.addr))
    people.extend(("Reply-To", a.addr) for a in mail.reply_to)
    if rp:
        people.append(("Return-Path", rp))
    # Compared as mailboxes: omo+x@minbzk.nl is still us, cp+1@gemeente.nl still the contact person.
    own = _mailboxes(policy.own_addresses)
    roster = _mailboxes(policy.roster_addresses)
    for role, addr in people:
        lower = addr.strip().lower()
        mailbox = normalise_address(lower)
        if mailbox in own:
            out.add("own-address", f"{role} {lower} is our own address", automated=True)
        elif mailbox in roster:
            out.add("roster-address", f"{role} {lower} is on the roster", automated=False)

    # Robot local parts: From, the envelope sender, and the address a reply would go to.
    robots: list[tuple[str, str]] = []
    if mail.from_ is not None:
        robots.append(("From", mail.from_.addr))
    if rp:
        robots.append(("Return-Path", rp))
    if target is not None and target is not mail.from_:
        robots.append(("Reply-To", target.addr))
    for role, addr in robots:
        local = _local(addr)
        glob = _matches(local, policy.robot_local_parts)
        if glob is None:
            continue
        # Only the author (From) can show a machine wrote it; an envelope sender like
        # bounces+id@esp or a noreply reply target forbids the reply only.
        machine = role == "From" and _matches(local, _MACHINE_LOCAL_PARTS) is not None
        out.add("robot-sender", f"{role} local part {local!r} matches {glob!r}", automated=machine)

    if target is None:
        shown = mail.from_.addr if mail.from_ is not None else "(no From)"
        out.add("no-reply-address", f"no valid Reply-To or From address ({_clip(shown)})", automated=False)


def _spam(mail: ParsedMail, out: _Findings) -> None:
    flag = mail.header("x-spam-flag")
    if flag is not None and flag.strip().lower() == "yes":
        out.add("spam", f"X-Spam-Flag: {_clip(flag)}", automated=True)
    status = mail.header("x-spam-status")
    if status is not None and status.lstrip().lower().startswith("yes"):
        out.add("spam", f"X-Spam-Status: {_clip(status)}", automated=True)


# --- entry point ------------------------------------------------------------------


def check(mail: ParsedMail, policy: GuardPolicy) -> GuardResult:
    """Every reason not to answer ``mail``, and where an answer would go."""
    target = _reply_target(mail)
    out = _Findings()
    _auto_submitted(mail, out)
    _precedence(mail, out)
    _lists_and_bulk(mail, out)
    _suppress(mail, out)
    _loops(mail, policy, out)
    _vendor(mail, out)
    _envelope_and_reports(mail, out)
    _calendar(mail, out)
    _senders(mail, policy, target, out)
    _spam(mail, out)
    return GuardResult(reasons=out.reasons(), reply_to=target)
