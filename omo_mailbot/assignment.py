"""Choosing the contact person for a new case.

First filter who is eligible: the topic (or organisation) fits, the person is
not absent today, and they hold fewer open cases than their capacity. Then
choose: fewest open cases; on a tie, the one who least recently got a case
(round robin), then roster order. Nobody eligible leaves the case in the
unassigned queue, which every digest shows. Every choice is written to the
case history with its reasons, so "why is this mine?" has an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import cases
from .models import Case
from .roster import Roster
from .routing import Routing, TopicMatch

OPEN = ("new", "assigned", "in_progress", "referred")


@dataclass(frozen=True)
class Choice:
    assignee: str | None
    why: str
    skipped: tuple[str, ...] = field(default_factory=tuple)  # "address: reason" for each one filtered out


def open_counts(session: Session, addresses: list[str]) -> dict[str, int]:
    rows = session.execute(
        select(Case.assignee, func.count(Case.id))
        .where(Case.assignee.in_(addresses), Case.status.in_(OPEN))
        .group_by(Case.assignee)
    ).all()
    counts = dict.fromkeys(addresses, 0)
    counts.update({str(a): int(n) for a, n in rows})
    return counts


def _last_given(session: Session, addresses: list[str]) -> dict[str, int]:
    """The id of the newest case each person holds (any status): lower means longer ago."""
    rows = session.execute(
        select(Case.assignee, func.max(Case.id)).where(Case.assignee.in_(addresses)).group_by(Case.assignee)
    ).all()
    return {str(a): int(n) for a, n in rows}


def choose(session: Session, roster: Roster, routing: Routing, matches: list[TopicMatch], today: date) -> Choice:
    """Who gets a case about ``matches`` on ``today`` (the local date), and why."""
    if not matches:
        return Choice(None, "geen onderwerp herkend")
    candidates: list[str] = []
    via: dict[str, str] = {}
    for match in matches:
        for address in routing.eligible(match.topic, roster):
            if address not in candidates:
                candidates.append(address)
                via[address] = match.topic.title
    if not candidates:
        return Choice(None, f"niemand op het rooster neemt {', '.join(m.topic.title for m in matches)}")
    counts = open_counts(session, candidates)
    skipped: list[str] = []
    eligible: list[str] = []
    for address in candidates:
        person = roster.person(address)
        assert person is not None  # routing only yields roster addresses
        absence = person.absent_on(today)
        if absence is not None:
            skipped.append(f"{address}: afwezig tot en met {absence.end.isoformat()}")
        elif counts[address] >= person.capacity:
            skipped.append(f"{address}: vol ({counts[address]} van {person.capacity} open)")
        else:
            eligible.append(address)
    if not eligible:
        return Choice(None, "iedereen voor dit onderwerp is afwezig of vol", tuple(skipped))
    last = _last_given(session, eligible)
    order = {a: i for i, a in enumerate(roster.addresses)}
    best = min(eligible, key=lambda a: (counts[a], last.get(a, 0), order[a]))
    tied = [a for a in eligible if counts[a] == counts[best]]
    how = f"minste open zaken ({counts[best]})" + (f", beurtelings onder {len(tied)}" if len(tied) > 1 else "")
    return Choice(best, f"onderwerp {via[best]}; {how}", tuple(skipped))


def assign_new_case(
    session: Session,
    case: Case,
    roster: Roster,
    routing: Routing,
    matches: list[TopicMatch],
    today: date,
    now: datetime,
) -> Choice:
    """Route a freshly opened case: store its topics, choose an assignee, record why."""
    case.topics = [m.topic.name for m in matches]
    if matches:
        cases.add_event(session, case, cases.SYSTEM, "routed", "; ".join(m.why() for m in matches), now)
    choice = choose(session, roster, routing, matches, today)
    detail = choice.why + (f" (overgeslagen: {'; '.join(choice.skipped)})" if choice.skipped else "")
    if choice.assignee is None:
        cases.add_event(session, case, cases.SYSTEM, "unassigned", detail, now)
    else:
        case.assignee = choice.assignee
        case.status = "assigned"
        cases.add_event(session, case, cases.SYSTEM, "assigned", f"aan {choice.assignee}: {detail}", now)
    return choice
