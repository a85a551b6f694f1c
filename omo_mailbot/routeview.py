"""What ``explain`` shows about routing: the topics a mail would get, who may take it, and who would.

The pipeline routes a new case with :func:`assignment.assign_new_case`; this
module asks the same questions without writing anything: the topic matches
with the signals that made them, the eligible people, and (when the database
can be read) the person :func:`assignment.choose` would pick today and why.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from . import assignment
from .mail import ParsedMail
from .roster import Roster
from .routing import Routing
from .verdict import Decision


def routing_record(
    mail: ParsedMail,
    decision: Decision,
    roster: Roster | None,
    routing: Routing | None,
    session: Session | None,
    today: date,
) -> dict[str, Any]:
    """The routing a new case for ``mail`` would get; ``session`` None: no assignee is computed."""
    if decision.label == "automated":
        return {"routed": False, "why": "automated mail opens no case"}
    if routing is None or roster is None:
        return {"routed": False, "why": "no roster or routing file: the case would stay unassigned"}
    matches = routing.match_mail(mail, decision.text.new, decision.text.quoted)
    eligible: list[str] = []
    for match in matches:
        eligible += [a for a in routing.eligible(match.topic, roster) if a not in eligible]
    record: dict[str, Any] = {
        "routed": True,
        "topics": [m.as_dict() for m in matches],
        "why_topics": [m.why() for m in matches],
        "eligible": eligible,
        "assignee": None,
        "assignee_why": "database not available: the assignee depends on open cases and was not computed",
        "skipped": [],
    }
    if session is not None:
        choice = assignment.choose(session, roster, routing, matches, today)
        record.update(assignee=choice.assignee, assignee_why=choice.why, skipped=list(choice.skipped))
    return record


def render_lines(record: dict[str, Any]) -> list[str]:
    """The routing part of ``explain``'s text output."""
    if not record.get("routed"):
        return [f"   routing:   none ({record.get('why', '')})"]
    lines = [f"   topics:    {'; '.join(record['why_topics']) or '(none recognised)'}"]
    if record["eligible"]:
        lines.append(f"   may take:  {', '.join(record['eligible'])}")
    who = record["assignee"] or "nobody (unassigned queue)"
    lines.append(f"   assignee:  {who} — {record['assignee_why']}")
    for skipped in record["skipped"]:
        lines.append(f"              skipped {skipped}")
    return lines
