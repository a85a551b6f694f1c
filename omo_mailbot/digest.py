"""The daily triage digest: one mail per contact person per working day.

What a person reads, in order: their own cases (new since their last digest,
then the rest), each with a short excerpt, why it is theirs (topic, rule hits,
how it was assigned), how old it is and its commands ready to copy; the
unassigned queue; acute mails of the last day with what was sent to whom or
why nothing was; cases without action for ``digest.stale_after_working_days``
working days; mails that need a human (unreadable mail, outbox failures); and
counts for the period since the previous working day's digest.

At most once per person per day, also across restarts and with several
instances: a ``digest_runs`` row with a unique (person, day) is written in the
same transaction as the outbox row, so a second run on the same day finds it
(or loses the insert race) and sends nothing. A run after the digest time on a
working day catches up whatever was not sent yet (downtime over 08:00).

This module is the only importer of css_inline.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import css_inline
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .config import Config
from .models import Case, CaseEvent, DigestRun, Message, OutboxMail, Verdict
from .outbox import enqueue
from .outgoing import machine_mail, new_message_id
from .roster import Person, Roster
from .templating import Templates
from .workdays import DAY_NAMES_NL, WorkCalendar, format_day

log = logging.getLogger(__name__)
DIGEST_PREFIX = "omo-digest."
OPEN = ("new", "assigned", "in_progress", "referred")
STATUS_NL = {
    "new": "nog niet opgepakt",
    "assigned": "toegewezen",
    "in_progress": "in behandeling",
    "referred": "doorverwezen",
    "closed": "gesloten",
}
KIND_NL = {
    "auto_reply": "automatisch antwoord",
    "duty_alert": "piketmelding",
    "digest": "digest",
    "command_reply": "antwoord op opdracht",
    "operator_alert": "melding aan beheer",
}
ACTION_NL = {"assigned": "toewijzing", "claimed": "geclaimd", "unassigned": "niet toegewezen"}
EXCERPT_CHARS = 280
MAX_LISTED = 50
_SPACE = re.compile(r"\s+")


def _snippets(matched: list[str]) -> str:
    return ", ".join(repr(m) for m in list(dict.fromkeys(matched))[:2])


def inline_css(html: str) -> str:
    """Move the template's <style> rules into style attributes (mail clients drop <style>); never fetch."""
    inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
    return str(inliner.inline(html))


@dataclass
class RunReport:
    day: date
    sent: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""


class DigestBuilder:
    """Reads the database and renders one person's digest; writes nothing.

    ``roster`` may be None: a service started without a roster file still schedules digests, and
    gets its roster when the operator adds the file (the service copies the reloaded one in).
    """

    def __init__(self, cfg: Config, templates: Templates, calendar: WorkCalendar, roster: Roster | None) -> None:
        self.cfg = cfg
        self.templates = templates
        self.calendar = calendar
        self.roster = roster
        self.tz = cfg.digest.zone
        self.at = cfg.digest.at

    # time helpers ---------------------------------------------------------------
    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz)

    def previous_working_day(self, day: date) -> date:
        probe = day - timedelta(days=1)
        for _ in range(60):
            if self.calendar.is_working_day(probe):
                return probe
            probe -= timedelta(days=1)
        return probe

    def period_start(self, now: datetime) -> datetime:
        """The previous working day's digest time: what "since the last digest" means for counts."""
        day = self.previous_working_day(self.local(now).date())
        return datetime.combine(day, self.at, self.tz)

    def _when(self, moment: datetime) -> str:
        loc = self.local(moment)
        return f"{DAY_NAMES_NL[loc.weekday()][:2]} {loc.day}-{loc.month} {loc:%H:%M}"

    def _age(self, moment: datetime, today: date) -> str:
        n = self.calendar.working_days_between(self.local(moment).date(), today)
        return "vandaag" if n == 0 and self.local(moment).date() == today else f"{n} werkdag{'en' if n != 1 else ''}"

    # the parts ------------------------------------------------------------------
    def _case(self, s: Session, case: Case, now: datetime, new_since: datetime | None) -> dict[str, Any]:
        today = self.local(now).date()
        first = s.execute(
            select(Message).where(Message.case_id == case.id).order_by(Message.id).limit(1)
        ).scalar_one_or_none()
        verdict = (
            s.execute(select(Verdict).where(Verdict.message_id == first.id)).scalar_one_or_none() if first else None
        )
        why: list[str] = []
        for topic in (verdict.topics if verdict else []) or []:
            if isinstance(topic, dict):
                signals = ", ".join(
                    f"{sig.get('symbol')} ({_snippets(sig.get('matched', []))})" for sig in topic.get("signals", [])
                )
                why.append(f"onderwerp {topic.get('title', topic.get('topic'))}: {signals}")
        decision_hits = [
            f"{h.get('symbol')} ({float(h.get('weight', 0)):+.1f})"
            for h in (verdict.hits if verdict else [])
            if isinstance(h, dict) and float(h.get("weight", 0)) > 0
        ]
        if decision_hits:
            why.append(f"label {case.label} door: {', '.join(decision_hits[:6])}")
        assigned = s.execute(
            select(CaseEvent)
            .where(CaseEvent.case_id == case.id, CaseEvent.action.in_(("assigned", "claimed", "unassigned")))
            .order_by(CaseEvent.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if assigned is not None and assigned.detail:
            action = ACTION_NL.get(assigned.action, assigned.action)
            why.append(f"{action} ({assigned.actor}): {assigned.detail}"[:400])
        excerpt = _SPACE.sub(" ", (first.new_text or "") if first else "").strip()
        if len(excerpt) > EXCERPT_CHARS:
            excerpt = excerpt[:EXCERPT_CHARS].rsplit(" ", 1)[0] + " …"
        ref = case.reference
        other = "preparation" if case.label == "acute" else "acute"
        stale_days = self.calendar.working_days_between(self.local(case.last_action_at).date(), today)
        return {
            "reference": ref,
            "subject": case.subject or "(geen onderwerp)",
            "requester": case.requester or "(onbekend)",
            "status": STATUS_NL.get(case.status, case.status),
            "label": case.label,
            "assignee": case.assignee or "",
            "referred_to": case.referred_to or "",
            "age": self._age(case.created_at, today),
            "received": self._when(case.created_at),
            "last_action": self._age(case.last_action_at, today),
            "stale": case.status in OPEN and stale_days >= self.cfg.digest.stale_after_working_days,
            "is_new": new_since is not None and case.created_at >= new_since,
            "needs_human_reason": case.needs_human_reason or "",
            "excerpt": excerpt,
            "why": why,
            "commands": [
                f"#claim {ref}",
                f"#assign {ref} naam@organisatie.nl",
                f"#close {ref} reden",
                f"#refer {ref} expert of team",
                f"#{other} {ref}",
            ],
        }

    def _reference(self, s: Session, case_id: int | None) -> str:
        case = s.get(Case, case_id) if case_id else None
        return case.reference if case is not None else ""

    def _acute(self, s: Session, since: datetime) -> list[dict[str, Any]]:
        rows = s.execute(
            select(Message, Verdict)
            .join(Verdict, Verdict.message_id == Message.id)
            .where(Verdict.label == "acute", Verdict.decided_at >= since)
            .order_by(Verdict.decided_at)
            .limit(MAX_LISTED)
        ).all()
        out: list[dict[str, Any]] = []
        for message, verdict in rows:
            sent = s.execute(
                select(OutboxMail.kind, OutboxMail.recipient, OutboxMail.status).where(
                    OutboxMail.source_message_id == message.id
                )
            ).all()
            case = s.get(Case, message.case_id) if message.case_id else None
            out.append(
                {
                    "reference": case.reference if case else "",
                    "received": self._when(message.received_at),
                    "sender": message.from_addr or "(onbekend)",
                    "subject": message.subject or "(geen onderwerp)",
                    "sent": [f"{KIND_NL.get(k, k)} aan {r} ({st})" for k, r, st in sent],
                    "suppressed": ""
                    if verdict.auto_reply
                    else (verdict.auto_reply_blocked_by or "geen reden vastgelegd"),
                }
            )
        return out

    def _counts(self, s: Session, since: datetime) -> dict[str, int]:
        def count(stmt: Any) -> int:
            return int(s.execute(stmt).scalar_one())

        labels = dict(
            s.execute(
                select(Verdict.label, func.count(Verdict.id)).where(Verdict.decided_at >= since).group_by(Verdict.label)
            ).all()
        )
        return {
            "received": count(select(func.count(Message.id)).where(Message.received_at >= since)),
            "acute": int(labels.get("acute", 0)),
            "preparation": int(labels.get("preparation", 0)),
            "automated": int(labels.get("automated", 0)),
            "unreadable": count(
                select(func.count(Message.id)).where(Message.received_at >= since, Message.status != "decided")
            ),
            "auto_replies": count(
                select(func.count(OutboxMail.id)).where(OutboxMail.kind == "auto_reply", OutboxMail.created_at >= since)
            ),
            "suppressed": count(
                select(func.count(Verdict.id)).where(
                    Verdict.label == "acute", Verdict.auto_reply.is_(False), Verdict.decided_at >= since
                )
            ),
            "opened": count(select(func.count(Case.id)).where(Case.created_at >= since)),
            "closed": count(
                select(func.count(CaseEvent.id)).where(CaseEvent.action == "closed", CaseEvent.at >= since)
            ),
            "open_total": count(select(func.count(Case.id)).where(Case.status.in_(OPEN))),
        }

    def context(self, s: Session, person: Person, now: datetime) -> dict[str, Any]:
        """Everything one person's digest shows, as plain dicts and strings for the templates."""
        today = self.local(now).date()
        since = self.period_start(now)
        last_digest = s.execute(
            select(func.max(DigestRun.created_at)).where(DigestRun.person == person.address, DigestRun.day < today)
        ).scalar()
        new_since = last_digest or since
        open_cases = list(
            s.execute(select(Case).where(Case.status.in_(OPEN)).order_by(Case.created_at, Case.id)).scalars()
        )
        views = {c.id: self._case(s, c, now, new_since) for c in open_cases}
        mine = [views[c.id] for c in open_cases if c.assignee == person.address]
        mine.sort(key=lambda v: (not v["is_new"], v["label"] != "acute"))
        unassigned = [views[c.id] for c in open_cases if not c.assignee]
        stale = [views[c.id] for c in open_cases if views[c.id]["stale"]]
        needs_human = [views[c.id] for c in open_cases if c.needs_human]
        failed = [
            {
                "kind": KIND_NL.get(row.kind, row.kind),
                "recipient": row.recipient,
                "error": (row.last_error or "")[:300],
                "created": self._when(row.created_at),
                "reference": self._reference(s, row.case_id),
            }
            for row in s.execute(
                select(OutboxMail).where(OutboxMail.status == "failed").order_by(OutboxMail.id.desc()).limit(MAX_LISTED)
            ).scalars()
        ]
        acute_since = min(since, now - timedelta(hours=24))
        counts = self._counts(s, since)
        counts.update(mine=len(mine), unassigned=len(unassigned), stale=len(stale))
        return {
            "person": {"name": person.name, "address": person.address, "organisation": person.organisation},
            "day": format_day(today, "nl"),
            "period": f"sinds {format_day(since.date(), 'nl')} {since:%H:%M}",
            "acute_period": f"sinds {self._when(acute_since)}",
            "counts": counts,
            "mine": mine[:MAX_LISTED],
            "new_count": sum(1 for v in mine if v["is_new"]),
            "unassigned": unassigned[:MAX_LISTED],
            "acute": self._acute(s, acute_since),
            "stale": stale[:MAX_LISTED],
            "stale_after": self.cfg.digest.stale_after_working_days,
            "needs_human": needs_human[:MAX_LISTED],
            "failed": failed,
            "our_address": self.cfg.smtp.from_address,
        }

    def render(self, context: dict[str, Any]) -> tuple[str, str]:
        """(HTML with inlined CSS, plain text)."""
        html = inline_css(self.templates.render_html("digest.html", context))
        text = self.templates.render_text("digest.txt", context)
        return html, text

    def subject(self, context: dict[str, Any]) -> str:
        c = context["counts"]
        return (
            f"Omo-digest {context['day']}: {c['mine']} eigen zaken ({context['new_count']} nieuw), "
            f"{c['unassigned']} niet toegewezen, {c['acute']} acuut"
        )

    def mail(self, person: Person, context: dict[str, Any], now: datetime) -> tuple[bytes, str]:
        html, text = self.render(context)
        smtp = self.cfg.smtp
        message_id = new_message_id(DIGEST_PREFIX, smtp.message_id_domain)
        raw = machine_mail(
            smtp,
            self.cfg.autoreply.loop_header,
            to=person.address,
            to_name=person.name,
            subject=self.subject(context),
            message_id=message_id,
            now=now,
            kind="auto-generated",
            text=text,
            html=html,
            language="nl",
        )
        return raw, message_id


class DigestRunner:
    """Sends today's digests once per person (the scheduler's job, the startup catch-up, `digest --send-now`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        builder: DigestBuilder,
        clock: Any,
    ) -> None:
        self.sessions = sessions
        self.builder = builder
        self.clock = clock

    def due(self, now: datetime) -> str | None:
        """Why no digest goes out at ``now``, or None when it is due."""
        local = self.builder.local(now)
        if not self.builder.calendar.is_working_day(local.date()):
            name = self.builder.calendar.holiday_name(local.date())
            return f"{local.date()} is not a working day" + (f" ({name})" if name else "")
        if local.time() < self.builder.at:
            return f"not yet {self.builder.cfg.digest.time}"
        return None

    def run(self, *, force: bool = False) -> RunReport:
        """Queue today's digest for every present person who has none yet; ``force`` ignores day and hour."""
        now = self.clock()
        today = self.builder.local(now).date()
        report = RunReport(today)
        roster = self.builder.roster
        if roster is None:  # not an error: the operator may add the roster file at any time
            report.reason = "no roster: nobody to send a digest to"
            log.info("no digests: there is no roster yet")
            return report
        why_not = None if force else self.due(now)
        if why_not is not None:
            report.reason = why_not
            return report
        for person in roster.persons:
            absence = person.absent_on(today)
            if absence is not None:
                report.skipped.append((person.address, f"absent until {absence.end}"))
                continue
            try:
                with self.sessions.begin() as s:
                    done = s.execute(
                        select(DigestRun.id).where(DigestRun.person == person.address, DigestRun.day == today)
                    ).first()
                    if done is not None:
                        report.skipped.append((person.address, "already sent today"))
                        continue
                    run = DigestRun(person=person.address, day=today, created_at=now)
                    s.add(run)
                    s.flush()  # the unique (person, day) row: a concurrent instance fails here
                    context = self.builder.context(s, person, now)
                    raw, message_id = self.builder.mail(person, context, now)
                    run.outbox_id = enqueue(
                        s,
                        kind="digest",
                        raw=raw,
                        recipient=person.address,
                        message_id=message_id,
                        now=now,
                        envelope_from=self.builder.cfg.smtp.envelope_from,
                    )
                report.sent.append(person.address)
            except IntegrityError:
                report.skipped.append((person.address, "already sent today by another instance"))
            except Exception as exc:  # one person's failure (a database hiccup, a template) must not stop the rest
                report.failed.append((person.address, f"{type(exc).__name__}: {exc}"[:300]))
                log.exception("digest for one person failed; the next run of the day tries again")
        log.info(
            "digest run",
            extra={
                "day": today.isoformat(),
                "sent": len(report.sent),
                "skipped": len(report.skipped),
                "failed": len(report.failed),
            },
        )
        return report

    def preview(self, directory: Path) -> list[Path]:
        """Write each person's digest as <address>.html and .txt without sending or recording anything."""
        directory.mkdir(parents=True, exist_ok=True)
        now = self.clock()
        written: list[Path] = []
        persons = self.builder.roster.persons if self.builder.roster is not None else ()
        with self.sessions() as s:
            for person in persons:
                context = self.builder.context(s, person, now)
                html, text = self.builder.render(context)
                stem = re.sub(r"[^a-z0-9._-]+", "_", person.address)
                for suffix, content in ((".html", html), (".txt", text)):
                    path = directory / f"{stem}{suffix}"
                    path.write_text(content, encoding="utf-8")
                    written.append(path)
        return written
