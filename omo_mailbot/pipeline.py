"""One mail from the mailbox to a committed decision.

For each fetched mail, in ONE transaction: the raw bytes, what was parsed, the
verdict with every hit, the case, the outbox rows (auto-reply, duty alert) and
the mailbox cursor. During a backlog one transaction holds a FETCH batch of
mails and the cursor (:meth:`Pipeline.process_batch`). Nothing is sent and nothing is marked on the server here;
the caller does that after the commit. A mail that makes any step raise is
stored with its traceback as a case that "needs a human", and the caller goes
on with the next one.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from . import assignment, autoreply, cases, commands
from .cases import Opened
from .config import Config
from .errors import ParseError
from .hotsql import HotStatement
from .mail import ParsedMail, parse
from .mailbox import FetchedMail
from .models import Bounce, Case, MailboxCursor, Message, Verdict, table_of
from .outbox import enqueue
from .prepare import Prepared, ms, parse_and_decide
from .roster import Roster
from .routing import Routing
from .templating import Templates
from .verdict import Decider, Decision
from .workdays import WorkCalendar, format_day

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
_FINAL_RECIPIENT = re.compile(rb"^Final-Recipient:\s*rfc822;\s*<?([^\s>]+@[^\s>]+)>?", re.I | re.M)
_FAILED = re.compile(rb"^Action:\s*failed", re.I | re.M)


@dataclass(frozen=True)
class Outcome:
    uid: int
    message_db_id: int | None
    status: str  # decided | parse_failed | too_large | error | duplicate
    label: str | None = None
    case_reference: str | None = None
    replied: bool = False
    blocked_by: str | None = None
    queued_mail: int = 0
    symbols: tuple[str, ...] = ()
    needs_human: str | None = None


def read_cursor(session: Session, mailbox: str) -> MailboxCursor | None:
    return session.execute(select(MailboxCursor).where(MailboxCursor.mailbox == mailbox)).scalar_one_or_none()


def sync_cursor(sessions: sessionmaker[Session], mailbox: str, uidvalidity: int, now: datetime) -> int:
    """The last processed UID for this UIDVALIDITY; a new UIDVALIDITY restarts from 0 (a full rescan)."""
    with sessions.begin() as s:
        cur = read_cursor(s, mailbox)
        if cur is None:
            s.add(MailboxCursor(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=0, updated_at=now))
            return 0
        if cur.uidvalidity != uidvalidity:
            log.warning(
                "UIDVALIDITY changed: rescanning the folder; duplicates are recognised by content",
                extra={"old": cur.uidvalidity, "new": uidvalidity},
            )
            cur.uidvalidity, cur.last_uid, cur.updated_at = uidvalidity, 0, now
            return 0
        return cur.last_uid


# Statements of the hot path, built once and run on the driver's cursor (:mod:`.hotsql`): building a
# statement for every mail cost about 90 microseconds, and running one through SQLAlchemy 30 to 40.
_CURSOR = table_of(MailboxCursor)
_MESSAGE = table_of(Message)
_MOVE_CURSOR = HotStatement(
    update(_CURSOR)
    .where(
        _CURSOR.c.mailbox == bindparam("in_mailbox"),
        _CURSOR.c.uidvalidity == bindparam("in_uidvalidity"),
        _CURSOR.c.last_uid < bindparam("past_uid"),
    )
    .values(last_uid=bindparam("to_uid"), updated_at=bindparam("at"))
)
_STORED_ID = HotStatement(select(_MESSAGE.c.id).where(_MESSAGE.c.sha256 == bindparam("digest")))
_VERDICTS = table_of(Verdict)
_INSERT_VERDICT = HotStatement(insert(_VERDICTS), [c.key for c in _VERDICTS.columns if not c.primary_key])
_MESSAGE_COLUMNS = [c.key for c in _MESSAGE.columns if not c.primary_key]
_INSERT_MESSAGE = HotStatement(insert(_MESSAGE).returning(_MESSAGE.c.id), _MESSAGE_COLUMNS)


def _subject(mail: ParsedMail | None) -> str | None:
    """The subject as stored (the column holds 2000 characters)."""
    return mail.subject[:2000] if mail else None


def _sender(mail: ParsedMail | None) -> str | None:
    """The From address as stored and compared: lower case, at most an address's 320 characters."""
    return mail.from_.addr.lower()[:320] if mail and mail.from_ else None


@dataclass(frozen=True)
class Stored:
    """A mail as written to ``messages``: what the rest of its processing needs of that row."""

    id: int
    uid: int
    raw: bytes | None
    subject: str | None
    from_addr: str | None


def _digest(fetched: FetchedMail, mailbox: str, uidvalidity: int) -> str:
    """What makes a mail a duplicate: its bytes. An empty body (a server that answered FETCH with NIL)
    has no bytes to tell it from another empty one, so it is keyed by its place instead: each becomes
    an error case of its own for a human, none is passed over as a duplicate of the first."""
    raw = fetched.raw
    if raw and not raw.isspace():
        return hashlib.sha256(raw).hexdigest()
    return hashlib.sha256(f"empty body at {mailbox}/{uidvalidity}/{fetched.uid}".encode()).hexdigest()


def _advance(session: Session, mailbox: str, uidvalidity: int, uid: int, now: datetime) -> None:
    """Move the cursor forward (never back) in the caller's transaction: one UPDATE, no read."""
    moved = _MOVE_CURSOR.run(
        session, {"in_mailbox": mailbox, "in_uidvalidity": uidvalidity, "past_uid": uid, "to_uid": uid, "at": now}
    )
    if not moved and read_cursor(session, mailbox) is None:
        session.add(MailboxCursor(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=uid, updated_at=now))


def _stored_id(session: Session, digest: str) -> int | None:
    """The id of a stored mail with these exact bytes (a second copy, or a rescan after UIDVALIDITY changed)."""
    found = _STORED_ID.scalar(session, {"digest": digest})
    return None if found is None else int(found)


def unreadable_reason(mail: ParsedMail, decision: Decision) -> str | None:
    """A mail whose text could not be read is decided on its subject alone: a human must look."""
    if decision.text.new.strip() or not (mail.defects or mail.attachment_names):
        return None
    what = ", ".join(mail.defects) if mail.defects else "only attachments"
    return f"no readable text ({what}); decided on the subject alone"


def _verdict_row(decision: Decision, now: datetime) -> dict[str, Any]:
    """The verdict's columns; the auto-reply outcome and topics are filled in before it is written."""
    return {
        "label": decision.label,
        "score": decision.score,
        "threshold": decision.threshold,
        "acute_probability": decision.acute_probability,
        "hits": [h.as_dict() for h in decision.hits],
        "automated_reasons": [
            {"code": r.code, "detail": r.detail, "automated": r.automated} for r in decision.guard.reasons
        ],
        "auto_reply": False,
        "auto_reply_blocked_by": None,
        "topics": [],
        "rules_hash": decision.rules_hash,
        "model_version": decision.model_version,
        "decided_at": now,
    }


def _insert_verdict(session: Session, message_id: int, row: dict[str, Any]) -> None:
    """One INSERT with every value final (nothing reads a verdict back in the same transaction)."""
    _INSERT_VERDICT.run(session, {**row, "message_id": message_id})


@dataclass(frozen=True)
class _Pending:
    """A decided mail not yet written: it is inserted once its case is known, in one statement."""

    mailbox: str
    uidvalidity: int
    fetched: FetchedMail
    digest: str
    mail: ParsedMail
    decision: Decision
    now: datetime
    timings: dict[str, float]  # milliseconds so far: parse, decide (for the log line)

    @property
    def subject(self) -> str | None:
        return _subject(self.mail)

    @property
    def from_addr(self) -> str | None:
        return _sender(self.mail)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _with_one_setup(method: Callable[Concatenate[Pipeline, _P], _R]) -> Callable[Concatenate[Pipeline, _P], _R]:
    """Run a Pipeline method holding its setup lock, so that a reload (:meth:`Pipeline.replace_setup`)
    waits for it: the mail or batch sees one decider, roster and routing from start to end."""

    @functools.wraps(method)
    def held(pipeline: Pipeline, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with pipeline._setup_lock:
            return method(pipeline, *args, **kwargs)

    return held


# A made-up mail for warm_up(): parsed and decided once at start-up, never stored or answered.
_WARM_UP_MAIL = (
    b"From: warm-up <warm-up@omo-mailbot.invalid>\r\nTo: omo@omo-mailbot.invalid\r\n"
    b"Subject: warm-up\r\nMessage-ID: <warm-up@omo-mailbot.invalid>\r\n\r\n"
    b"Vanavond demonstratie bij het gemeentehuis; graag advies over de bijeenkomst van volgende week.\r\n"
)


class Pipeline:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        decider: Decider,
        cfg: Config,
        templates: Templates,
        calendar: WorkCalendar,
        clock: Clock,
        roster: Roster | None = None,
        routing: Routing | None = None,
    ) -> None:
        self.sessions = sessions
        self.decider = decider
        self.cfg = cfg
        self.templates = templates
        self.calendar = calendar
        self.clock = clock
        self.roster = roster
        self.routing = routing
        # Held while a mail (or a batch) is processed and while a reload swaps the three above, so that a
        # mail is decided, routed and answered with one consistent set: all old or all new.
        self._setup_lock = threading.RLock()

    def warm_up(self) -> None:
        """Do at start-up what the first mail would otherwise pay for: the holiday tables (importing them
        took 160 ms), the classifier's vocabularies and the rules (by deciding a made-up mail, which is
        neither stored nor answered), and the templates of every answer. A failure here is logged, not
        raised: the first mail would then simply be slower."""
        started = time.perf_counter()
        try:
            now = self.clock()
            self.calendar.first_digest_day(now, self.cfg.digest.zone, self.cfg.digest.at)
            parse_and_decide(self.decider, _WARM_UP_MAIL)
            self.templates.preload()
        except Exception:
            log.warning("warming up before the first mail failed; the first mail may be slower", exc_info=True)
            return
        log.info("warmed up for the first mail", extra={"warm_up_ms": ms(time.perf_counter() - started)})

    def replace_setup(self, decider: Decider, roster: Roster | None, routing: Routing | None) -> None:
        """Swap decider, roster and routing at once; waits for the mail or batch in hand to finish."""
        with self._setup_lock:
            self.decider, self.roster, self.routing = decider, roster, routing

    @_with_one_setup
    def process(
        self,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        *,
        retry: bool = True,
        prepared: Prepared | None = None,
    ) -> Outcome:
        """Store and decide one mail; never raises for a bad mail, only when the database fails.

        A database that fails (connection lost, failover, deadlock, serialization
        failure, "database is locked") is not the mail's fault: the transaction is
        rolled back, the mail is neither stored nor marked, and the error goes up
        so the caller can pause and fetch the mail again. Only what goes wrong with
        the mail itself becomes an error case. ``prepared`` is the mail already parsed and decided (by
        :class:`~omo_mailbot.prepare.Preparer`); without it the mail is parsed and decided here.
        """
        now = self.clock()
        try:
            with self.sessions.begin() as s:
                return self._process(s, mailbox, uidvalidity, fetched, now, prepared=prepared)
        except IntegrityError:
            with self.sessions.begin() as s:
                stored = _stored_id(s, _digest(fetched, mailbox, uidvalidity))
                if stored is not None:
                    # a concurrent instance stored the same mail first: nothing to do but move on
                    _advance(s, mailbox, uidvalidity, fetched.uid, now)
                    return Outcome(fetched.uid, stored, "duplicate")
            if retry:
                # another unique key collided (a row two instances wrote at once): the mail is not
                # stored, so it must not be passed over; once more from the start
                log.warning("a unique key collided; processing the mail again", extra={"uid": fetched.uid})
                return self.process(mailbox, uidvalidity, fetched, retry=False, prepared=prepared)
            return self._fail(mailbox, uidvalidity, fetched, now, traceback.format_exc(limit=8))
        except OperationalError:
            raise
        except Exception:
            # Something in the full path failed after parsing; keep the bytes and the traceback.
            return self._fail(mailbox, uidvalidity, fetched, now, traceback.format_exc(limit=8))

    def _fail(self, mailbox: str, uidvalidity: int, fetched: FetchedMail, now: datetime, error: str) -> Outcome:
        """Store a mail that made the pipeline raise, with the traceback, as a case for a human."""
        try:
            with self.sessions.begin() as s:
                return self._store_failure(s, mailbox, uidvalidity, fetched, now, "error", error)
        except Exception:
            error += "\n\nstoring the readable fields failed too:\n" + traceback.format_exc(limit=4)
            with self.sessions.begin() as s:
                return self._store_failure(s, mailbox, uidvalidity, fetched, now, "error", error, readable=False)

    @_with_one_setup
    def process_batch(
        self,
        mailbox: str,
        uidvalidity: int,
        batch: Sequence[FetchedMail],
        prepared: Sequence[Prepared | None] | None = None,
        decided_by: Decider | None = None,
    ) -> list[Outcome]:
        """Store and decide the mails of one FETCH batch in ONE transaction; the cursor moves in it too.

        During a backlog this pays BEGIN, COMMIT, the session and the cursor update once per batch
        instead of once per mail; nothing is lost or doubled by a crash, since the batch and its cursor
        commit together. If anything in the batch raises, all of it is rolled back and each mail is
        processed again in a transaction of its own (see :meth:`process`), so a mail that breaks the
        pipeline still gets its own error case and the others their decisions (their "decided" log
        lines then appear twice). A single mail, the usual case in IDLE, takes :meth:`process` directly.
        ``prepared`` holds, per mail, what a :class:`~omo_mailbot.prepare.Preparer` made of it, or None;
        ``decided_by`` the decider it used. When a reload has replaced that decider since, the prepared
        decisions are set aside and the batch is decided here with the new one.
        """
        if decided_by is not None and decided_by is not self.decider:
            prepared = None
        ahead: Sequence[Prepared | None] = prepared if prepared is not None else [None] * len(batch)
        if len(ahead) != len(batch):
            raise ValueError(f"{len(ahead)} prepared mails for a batch of {len(batch)}")
        if len(batch) <= 1:
            return [self.process(mailbox, uidvalidity, f, prepared=p) for f, p in zip(batch, ahead, strict=True)]
        try:
            with self.sessions.begin() as s:
                outcomes = [
                    self._process(s, mailbox, uidvalidity, f, self.clock(), advance=False, prepared=p)
                    for f, p in zip(batch, ahead, strict=True)
                ]
                _advance(s, mailbox, uidvalidity, max(f.uid for f in batch), self.clock())
            return outcomes
        except OperationalError:
            raise
        except Exception as exc:
            log.warning(
                "a batch failed; processing its mails one by one",
                extra={"mails": len(batch), "error": type(exc).__name__},
            )
            return [self.process(mailbox, uidvalidity, f, prepared=p) for f, p in zip(batch, ahead, strict=True)]

    def _process(
        self,
        s: Session,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        now: datetime,
        *,
        advance: bool = True,
        prepared: Prepared | None = None,
    ) -> Outcome:
        digest = _digest(fetched, mailbox, uidvalidity)
        existing = _stored_id(s, digest)
        if existing is not None:
            if advance:
                _advance(s, mailbox, uidvalidity, fetched.uid, now)
            return Outcome(fetched.uid, existing, "duplicate")
        if fetched.too_large:
            return self._store_failure(
                s,
                mailbox,
                uidvalidity,
                fetched,
                now,
                "too_large",
                f"message of {fetched.size} bytes is over the limit of {self.cfg.imap.max_message_mb:g} MB; only its "
                f"headers and structure were read: {fetched.bodystructure[:1000]}",
                advance=advance,
            )
        if prepared is None:
            try:
                prepared = parse_and_decide(self.decider, fetched.raw)
            except ParseError as exc:
                return self._store_failure(
                    s, mailbox, uidvalidity, fetched, now, "parse_failed", str(exc), advance=advance
                )
        mail, decision, timings = prepared.mail, prepared.decision, prepared.timings
        pending = _Pending(mailbox, uidvalidity, fetched, digest, mail, decision, now, timings)
        outcome = self._act(s, pending, mail, decision, now)
        if advance:
            _advance(s, mailbox, uidvalidity, fetched.uid, now)
        return outcome

    def _store_message(
        self,
        s: Session,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        digest: str,
        mail: ParsedMail | None,
        now: datetime,
        status: str,
        error: str | None,
        *,
        case_id: int | None = None,
        decision: Decision | None = None,
    ) -> Stored:
        subject, from_addr = _subject(mail), _sender(mail)
        row = {
            "mailbox": mailbox,
            "uidvalidity": uidvalidity,
            "uid": fetched.uid,
            "sha256": digest,
            "message_id_header": mail.message_id[:998] if mail and mail.message_id else None,  # the column's size
            "size": fetched.size,
            "raw": fetched.raw,
            "received_at": now,
            "date_header": mail.date if mail else None,
            "subject": subject,
            "from_addr": from_addr,
            "from_name": mail.from_.name[:500] if mail and mail.from_ else None,
            "status": status,
            "error": error,
            "new_text": decision.text.new if decision else None,
            "stripped_text": decision.text.stripped if decision else None,
            "language": decision.language if decision else None,
            "case_id": case_id,
            "purged_at": None,
        }
        (message_id,) = _INSERT_MESSAGE.row(s, row)
        return Stored(int(message_id), fetched.uid, fetched.raw, subject, from_addr)

    def _store_failure(
        self,
        s: Session,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        now: datetime,
        status: str,
        error: str,
        *,
        readable: bool = True,
        advance: bool = True,
    ) -> Outcome:
        digest = _digest(fetched, mailbox, uidvalidity)
        existing = _stored_id(s, digest)
        if existing is not None:
            if advance:
                _advance(s, mailbox, uidvalidity, fetched.uid, now)
            return Outcome(fetched.uid, existing, "duplicate")
        mail = None
        if readable:
            try:
                mail = parse(fetched.raw)  # headers may still be readable for the human
            except Exception:
                mail = None
        reason = {
            "parse_failed": "could not be parsed",
            "too_large": "too large to read",
            "error": "processing failed",
        }[status]
        case = cases.open_case(
            s,
            label="preparation",
            subject=_subject(mail),
            requester=_sender(mail),
            now=now,
            needs_human_reason=f"{reason}: {error.splitlines()[-1][:300] if error else ''}",
            year=self._local_year(now),
        )
        message = self._store_message(
            s, mailbox, uidvalidity, fetched, digest, mail, now, status, error, case_id=case.id
        )
        if advance:
            _advance(s, mailbox, uidvalidity, fetched.uid, now)
        log.warning("mail needs a human", extra={"uid": fetched.uid, "status": status, "case": case.reference})
        return Outcome(
            fetched.uid, message.id, status, case_reference=case.reference, needs_human=case.needs_human_reason
        )

    def _write(self, s: Session, pending: _Pending, case_id: int | None) -> Stored:
        p = pending
        return self._store_message(
            s,
            p.mailbox,
            p.uidvalidity,
            p.fetched,
            p.digest,
            p.mail,
            p.now,
            "decided",
            None,
            case_id=case_id,
            decision=p.decision,
        )

    def _local_year(self, now: datetime) -> int:
        """The year in the network's time zone: a mail at 00:30 on 1 January is the new year's case."""
        return now.astimezone(self.cfg.digest.zone).year

    def _act(self, s: Session, pending: _Pending, mail: ParsedMail, decision: Decision, now: datetime) -> Outcome:
        acting = time.perf_counter()  # case, routing, replies and rows: the rest of the log line's timings
        verdict = _verdict_row(decision, now)
        symbols = tuple(decision.rule_symbols)
        if decision.label == "automated":
            message = self._write(s, pending, None)
            verdict["auto_reply_blocked_by"] = decision.auto_reply_blocked_by
            _insert_verdict(s, message.id, verdict)
            self._record_bounce(s, message, mail, decision, now)
            log.info(
                "stored automated mail",
                extra={
                    "message_db_id": message.id,
                    "reasons": [r.code for r in decision.guard.reasons],
                    **pending.timings,
                },
            )
            return Outcome(
                message.uid,
                message.id,
                "decided",
                decision.label,
                blocked_by=verdict["auto_reply_blocked_by"],
                symbols=symbols,
            )
        # only what the sender wrote counts, never a forwarded digest; the new text holds the sender's own
        # text, so a mail without any command line there is spared the second look at its body
        command_lines = commands.mail_commands(mail) if commands.find_commands(decision.text.new) else []
        if command_lines and self.roster is not None and self.roster.person(pending.from_addr or "") is not None:
            # a contact person acting on cases: handled and answered, never a case of its own
            message = self._write(s, pending, None)
            _insert_verdict(s, message.id, verdict)
            results, answered = commands.process_command_mail(
                s, mail, message.id, command_lines, self.roster, self.cfg, self.templates, now
            )
            done = sum(r.done for r in results)
            log.info(
                "command mail",
                extra={"message_db_id": message.id, "done": done, "total": len(results), "answered": answered},
            )
            return Outcome(
                message.uid, message.id, "command", decision.label, queued_mail=int(answered), symbols=symbols
            )
        thread = cases.find_thread_case(s, mail)
        if thread is None:
            case = cases.open_case(
                s,
                label=decision.label,
                subject=pending.subject,
                requester=pending.from_addr,
                now=now,
                needs_human_reason=unreadable_reason(mail, decision),
                year=self._local_year(now),
            )
            message = self._write(s, pending, case.id)
            self._route(s, case, mail, decision, verdict, now)
        else:
            message = self._write(s, pending, thread.id)
            cases.follow_up(s, thread, message.id, decision.label, now)
            case = Opened.of(thread)
        # From here on the case's updated_at is this mail's time (opened or followed up just now), so its
        # history grows by plain system entries (insert_event) without touching the case row again.
        if command_lines:
            why = "command lines from a sender not on the roster"
            cases.insert_event(s, case.id, cases.SYSTEM, "commands-ignored", why, now)
        queued = 0
        blocked = decision.auto_reply_blocked_by
        replied = False
        if decision.label == "acute":
            blocked, replied, queued = self._auto_reply(s, message, mail, decision, case, now, "acute_reply")
            sent = (
                f"de richtlijnen zijn automatisch gestuurd aan {decision.guard.reply_to.addr}"
                if replied and decision.guard.reply_to
                else f"geen automatisch antwoord: {blocked}"
            )
            queued += self._alert_duty(s, message, mail, decision, case, now, sent)
        elif decision.label == "preparation" and self.cfg.autoreply.acknowledge_preparation:
            blocked, replied, queued = self._auto_reply(s, message, mail, decision, case, now, "preparation_ack")
        verdict["auto_reply"], verdict["auto_reply_blocked_by"] = replied, blocked
        _insert_verdict(s, message.id, verdict)
        log.info(
            "decided",
            extra={
                "message_db_id": message.id,
                "message_id": mail.message_id,
                "label": decision.label,
                "score": decision.score,
                "case": case.reference,
                "symbols": list(symbols),
                "auto_reply": replied,
                **pending.timings,
                "act_ms": ms(time.perf_counter() - acting),
            },
        )
        return Outcome(
            message.uid,
            message.id,
            "decided",
            decision.label,
            case.reference,
            replied,
            blocked,
            queued,
            symbols,
            case.needs_human_reason,
        )

    def _auto_reply(
        self,
        s: Session,
        message: Stored,
        mail: ParsedMail,
        decision: Decision,
        case: Opened,
        now: datetime,
        template: str,
    ) -> tuple[str | None, bool, int]:
        """Queue the automatic answer unless a guard or a brake forbids it: (blocked_by, replied, queued)."""
        cfg = self.cfg
        blocked = decision.guard.blocked_by
        recipient = decision.guard.reply_to
        if not cfg.autoreply.enabled:
            blocked = "disabled: autoreply.enabled is false"
        if blocked is None and recipient is not None:
            blocked = autoreply.rate_limit_block(s, cfg.autoreply, recipient.addr, autoreply.thread_key(mail), now)
        queued = 0
        replied = False
        if blocked is None and recipient is not None:
            first = self.calendar.first_digest_day(now, cfg.digest.zone, cfg.digest.at)
            day = format_day(first, decision.language)
            raw, msgid = autoreply.build_reply(
                self.templates, cfg.smtp, cfg.autoreply, mail, decision, recipient, case.reference, day, now, template
            )
            enqueue(
                s,
                kind="auto_reply",
                raw=raw,
                recipient=recipient.addr,
                message_id=msgid,
                now=now,
                envelope_from=cfg.smtp.envelope_from,
                thread_key=autoreply.thread_key(mail),
                source_message_id=message.id,
                case_id=case.id,
            )
            cases.insert_event(s, case.id, cases.SYSTEM, "auto-reply", f"{template} queued as {msgid}", now)
            queued += 1
            replied = True
        else:
            cases.insert_event(s, case.id, cases.SYSTEM, "no-auto-reply", blocked, now)
        return blocked, replied, queued

    def _alert_duty(
        self, s: Session, message: Stored, mail: ParsedMail, decision: Decision, case: Opened, now: datetime, sent: str
    ) -> int:
        """An acute mail, answered or not, alerts the people on duty through the outbox."""
        cfg = self.cfg
        queued = 0
        for duty in self.duty_addresses(now):
            raw, msgid = autoreply.build_duty_alert(
                self.templates, cfg.smtp, cfg.autoreply, mail, decision, duty, case.reference, sent, now
            )
            enqueue(
                s,
                kind="duty_alert",
                raw=raw,
                recipient=duty,
                message_id=msgid,
                now=now,
                envelope_from=cfg.smtp.envelope_from,
                source_message_id=message.id,
                case_id=case.id,
            )
            queued += 1
        return queued

    def _route(
        self, s: Session, case: Opened, mail: ParsedMail, decision: Decision, verdict: dict[str, Any], now: datetime
    ) -> None:
        """Topics for a new case and, with a roster, its contact person (the why goes into the history)."""
        if self.routing is None or self.roster is None:
            return
        matches = self.routing.match_mail(mail, decision.text.new, decision.text.quoted)
        verdict["topics"] = [m.as_dict() for m in matches]
        today = now.astimezone(self.cfg.digest.zone).date()
        loaded = s.get(Case, case.id)
        assert loaded is not None  # written in this transaction
        assignment.assign_new_case(s, loaded, self.roster, self.routing, matches, today, now)

    def duty_addresses(self, now: datetime) -> list[str]:
        """Who gets the acute alert: the people on duty in the roster (or its fallback), else
        ``alerts.duty_address``. An acute mail is never alerted to nobody without a warning."""
        roster = self.roster
        if roster is not None and roster.shifts:
            on_duty = roster.on_duty(now.astimezone(self.cfg.digest.zone).replace(tzinfo=None))
            if on_duty:
                return on_duty
        if self.cfg.alerts.duty_address:
            return [self.cfg.alerts.duty_address]
        log.warning("an acute mail alerts nobody: no one on duty, no duty.fallback and no alerts.duty_address")
        return []

    def _record_bounce(self, s: Session, message: Stored, mail: ParsedMail, decision: Decision, now: datetime) -> None:
        if not any(r.code == "delivery-report" for r in decision.guard.reasons) or message.raw is None:
            return
        if not _FAILED.search(message.raw):
            return
        for m in _FINAL_RECIPIENT.finditer(message.raw):
            s.add(Bounce(address=m.group(1).decode(errors="replace").lower()[:320], at=now, message_id=message.id))
