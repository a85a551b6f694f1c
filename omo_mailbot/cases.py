"""Cases: the unit of work for contact persons.

A case has a stable reference (``OMO-2026-0042``), a status, an assignee, topics
and a history. Follow-ups join their case by In-Reply-To/References first and
by the reference in the subject second, never by subject text alone; a
follow-up on a closed case reopens it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .hotsql import HotStatement
from .mail import ParsedMail
from .models import Case, CaseEvent, Counter, Message, OutboxMail, table_of

REFERENCE = re.compile(r"\bOMO-(\d{4})-(\d{4,6})\b", re.IGNORECASE)
SYSTEM = "omo-mailbot"


_COUNTER = table_of(Counter)
_CASES = table_of(Case)
_EVENT_COLUMNS = ("case_id", "at", "actor", "action", "detail")
_INSERT_EVENT = HotStatement(insert(table_of(CaseEvent)), _EVENT_COLUMNS)
_CASE_COLUMNS = tuple(c.key for c in _CASES.columns if not c.primary_key)
_INSERT_CASE = HotStatement(insert(_CASES).returning(_CASES.c.id), _CASE_COLUMNS)


def _bump(insert_for: Any) -> Any:
    """INSERT the year's counter at 1, or add one to it: a single statement, also for the first case
    of a year (two instances inserting that row at once would otherwise collide)."""
    first = insert_for(_COUNTER).values(name=bindparam("counter"), value=1)
    bumped = first.on_conflict_do_update(index_elements=[_COUNTER.c.name], set_={"value": _COUNTER.c.value + 1})
    return bumped.returning(_COUNTER.c.value)


_BUMPS = {"postgresql": HotStatement(_bump(postgresql.insert)), "sqlite": HotStatement(_bump(sqlite.insert))}


def next_reference(session: Session, year: int) -> str:
    """The next case reference of ``year``. One upsert of the year's counter row: its row lock
    serialises concurrent instances on PostgreSQL (SQLite has one writer anyway)."""
    (value,) = _BUMPS[session.connection().dialect.name].row(session, {"counter": f"case-{year}"})
    return f"OMO-{year}-{int(value):04d}"


def insert_event(session: Session, case_id: int, actor: str, action: str, detail: str | None, now: datetime) -> None:
    """Append one entry to a case's history and nothing else: for a case whose ``updated_at`` is
    already ``now`` (opened or followed up by this same mail), by the system (no ``last_action_at``)."""
    _INSERT_EVENT.run(session, {"case_id": case_id, "at": now, "actor": actor, "action": action, "detail": detail})


def add_event(session: Session, case: Case, actor: str, action: str, detail: str | None, now: datetime) -> None:
    """Append to a case's history (one INSERT; nothing holds events as objects) and mark the case
    as changed now, and as acted on when a person did it."""
    if case.id is None:
        session.flush()  # a case added but not yet written gets its id first
    insert_event(session, case.id, actor, action, detail, now)
    if case.updated_at != now:  # assigning an equal value would still make the object dirty
        case.updated_at = now
    if actor != SYSTEM:
        case.last_action_at = now


def find_thread_case(session: Session, mail: ParsedMail) -> Case | None:
    """The case this mail continues, by message ids first, then by a reference in the subject."""
    ids = [i for i in (*mail.in_reply_to, *reversed(mail.references)) if i]
    if ids:
        case_id = session.execute(
            select(Message.case_id).where(Message.message_id_header.in_(ids), Message.case_id.is_not(None)).limit(1)
        ).scalar_one_or_none()
        if case_id is None:
            case_id = session.execute(
                select(OutboxMail.case_id)
                .where(OutboxMail.message_id_header.in_(ids), OutboxMail.case_id.is_not(None))
                .limit(1)
            ).scalar_one_or_none()
        if case_id is not None:
            return session.get(Case, case_id)
    m = REFERENCE.search(mail.subject or "")
    if m:
        ref = f"OMO-{m.group(1)}-{m.group(2)}".upper()
        return session.execute(select(Case).where(Case.reference == ref)).scalar_one_or_none()
    return None


@dataclass(frozen=True)
class Opened:
    """A case as the pipeline needs it once the mail is filed: its id, its reference, and why a human
    must look at it (None when nothing needs one)."""

    id: int
    reference: str
    needs_human_reason: str | None

    @classmethod
    def of(cls, case: Case) -> Opened:
        return cls(case.id, case.reference, case.needs_human_reason if case.needs_human else None)


def open_case(
    session: Session,
    *,
    label: str,
    subject: str | None,
    requester: str | None,
    now: datetime,
    needs_human_reason: str | None = None,
    year: int | None = None,
) -> Opened:
    """A new case numbered in ``year`` (default: the UTC year of ``now``; the pipeline passes the local
    year), written with two INSERTs and its "created" entry; no object of it stays in the session
    (load it with ``session.get(Case, opened.id)`` to change it)."""
    reference = next_reference(session, year or now.year)
    row = {
        "reference": reference,
        "status": "new",
        "label": label,
        "needs_human": needs_human_reason is not None,
        "needs_human_reason": needs_human_reason,
        "assignee": None,
        "topics": [],
        "referred_to": None,
        "subject": subject,
        "requester": requester,
        "created_at": now,
        "updated_at": now,
        "last_action_at": now,
    }
    (case_id,) = _INSERT_CASE.row(session, row)
    detail = f"label {label}" + (f"; needs a human: {needs_human_reason}" if needs_human_reason else "")
    insert_event(session, int(case_id), SYSTEM, "created", detail, now)
    return Opened(int(case_id), reference, needs_human_reason)


def follow_up(session: Session, case: Case, message_id: int, label: str, now: datetime) -> None:
    """Record a follow-up mail (already filed under ``case``); reopen a closed case; an acute follow-up
    makes the case acute."""
    if case.status == "closed":
        case.status = "assigned" if case.assignee else "new"
        add_event(session, case, SYSTEM, "reopened", "a follow-up arrived on a closed case", now)
    else:
        add_event(session, case, SYSTEM, "follow-up", f"message {message_id} ({label})", now)
    if label == "acute" and case.label != "acute":
        add_event(session, case, SYSTEM, "relabelled", f"{case.label} -> acute by a follow-up", now)
        case.label = "acute"
