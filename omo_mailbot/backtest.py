"""Backtest: what a rules (or model, or routing) change would do to the mail already stored.

Every stored mail that was decided (``messages.status = 'decided'``, raw bytes
still present) in the period is decided twice, with the live version and with
the candidate, and only the differences are reported: label flips first
(acute <-> preparation: the ones that change who gets an answer within
seconds), then routing changes (topics and the people who may take the case),
then auto-reply changes. Both sides are decided now, from the same bytes, so a
difference is caused by the candidate alone and not by an older rule version
that made the stored verdict; how many stored verdicts differ from the live
re-decision is counted separately as drift. Nothing is written: the session
only reads and is rolled back.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .errors import ParseError
from .mail import ParsedMail, parse
from .models import Message, Verdict
from .roster import Roster
from .routing import Routing
from .verdict import Decider, Decision

Progress = Callable[[int, int], None]
BATCH = 200


@dataclass(frozen=True)
class Side:
    """One version of everything that decides and routes."""

    decider: Decider
    routing: Routing | None = None
    roster: Roster | None = None

    def route(self, mail: ParsedMail, decision: Decision) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Topics and the people who may take the case (automated mail opens no case: no routing)."""
        if self.routing is None or decision.label == "automated":
            return (), ()
        matches = self.routing.match_mail(mail, decision.text.new, decision.text.quoted)
        topics = tuple(m.topic.name for m in matches)
        people: list[str] = []
        if self.roster is not None:
            for m in matches:
                people += [a for a in self.routing.eligible(m.topic, self.roster) if a not in people]
        return topics, tuple(people)


@dataclass(frozen=True)
class Change:
    message_db_id: int
    message_id: str | None
    subject: str
    received_at: datetime
    stored_label: str | None
    before_label: str
    after_label: str
    before_score: float
    after_score: float
    added_symbols: tuple[str, ...]
    removed_symbols: tuple[str, ...]
    before_topics: tuple[str, ...] = ()
    after_topics: tuple[str, ...] = ()
    before_people: tuple[str, ...] = ()
    after_people: tuple[str, ...] = ()
    before_reply: bool = False
    after_reply: bool = False
    reply_blocked_by: str | None = None  # why the candidate would not answer

    @property
    def flip(self) -> str:
        return f"{self.before_label} -> {self.after_label}"

    def as_dict(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        out["received_at"] = self.received_at.isoformat()
        out["flip"] = self.flip
        return out


@dataclass
class BacktestResult:
    since: datetime | None
    baseline_rules_hash: str
    candidate_rules_hash: str
    baseline_model: str
    candidate_model: str
    total: int = 0
    unreadable: int = 0
    drift: int = 0  # stored verdicts that the live version would now decide differently
    label_flips: list[Change] = field(default_factory=list)
    routing_changes: list[Change] = field(default_factory=list)
    auto_reply_changes: list[Change] = field(default_factory=list)

    @property
    def flip_counts(self) -> dict[str, int]:
        return dict(Counter(c.flip for c in self.label_flips))

    @property
    def unchanged(self) -> int:
        changed = {c.message_db_id for c in self.label_flips + self.routing_changes + self.auto_reply_changes}
        return self.total - self.unreadable - len(changed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "baseline": {"rules_hash": self.baseline_rules_hash, "model_version": self.baseline_model},
            "candidate": {"rules_hash": self.candidate_rules_hash, "model_version": self.candidate_model},
            "counts": {
                "mails": self.total,
                "unreadable": self.unreadable,
                "drift": self.drift,
                "label_flips": len(self.label_flips),
                "label_flips_by_direction": self.flip_counts,
                "routing_changes": len(self.routing_changes),
                "auto_reply_changes": len(self.auto_reply_changes),
                "auto_reply_gained": sum(1 for c in self.auto_reply_changes if c.after_reply),
                "auto_reply_lost": sum(1 for c in self.auto_reply_changes if not c.after_reply),
                "unchanged": self.unchanged,
            },
            "label_flips": [c.as_dict() for c in self.label_flips],
            "routing_changes": [c.as_dict() for c in self.routing_changes],
            "auto_reply_changes": [c.as_dict() for c in self.auto_reply_changes],
        }


def _stored(session: Session, since: datetime | None) -> tuple[int, Iterator[Any]]:
    where = [Message.status == "decided", Message.raw.is_not(None)]
    if since is not None:
        where.append(Message.received_at >= since)
    total = int(session.execute(select(func.count()).select_from(Message).where(*where)).scalar_one())
    rows = session.execute(
        select(Message.id, Message.message_id_header, Message.subject, Message.received_at, Message.raw, Verdict.label)
        .outerjoin(Verdict, Verdict.message_id == Message.id)
        .where(*where)
        .order_by(Message.received_at, Message.id)
        .execution_options(yield_per=BATCH)
    )
    return total, iter(rows)


def run_backtest(
    sessions: sessionmaker[Session],
    baseline: Side,
    candidate: Side,
    *,
    since: datetime | None = None,
    progress: Progress | None = None,
) -> BacktestResult:
    """Decide the stored mail of the period with both sides; collect what differs."""
    result = BacktestResult(
        since,
        baseline.decider.rules.hash,
        candidate.decider.rules.hash,
        baseline.decider.model_version,
        candidate.decider.model_version,
    )
    with sessions() as session:
        total, rows = _stored(session, since)
        result.total = total
        for done, (db_id, message_id, subject, received_at, raw, stored_label) in enumerate(rows, start=1):
            try:
                mail = parse(raw)
            except ParseError:
                result.unreadable += 1
                continue
            before = baseline.decider.decide(mail)
            after = candidate.decider.decide(mail)
            if stored_label is not None and stored_label != before.label:
                result.drift += 1
            row = (db_id, message_id, subject, received_at, stored_label)
            _compare(result, baseline, candidate, mail, before, after, row)
            if progress is not None:
                progress(done, total)
        session.rollback()
    return result


def _compare(
    result: BacktestResult,
    baseline: Side,
    candidate: Side,
    mail: ParsedMail,
    before: Decision,
    after: Decision,
    row: tuple[int, str | None, str | None, datetime, str | None],
) -> None:
    before_topics, before_people = baseline.route(mail, before)
    after_topics, after_people = candidate.route(mail, after)
    before_symbols, after_symbols = set(before.rule_symbols), set(after.rule_symbols)
    db_id, message_id, subject, received_at, stored_label = row
    change = Change(
        db_id,
        message_id,
        subject or "",
        received_at,
        stored_label,
        before.label,
        after.label,
        before.score,
        after.score,
        tuple(sorted(after_symbols - before_symbols)),
        tuple(sorted(before_symbols - after_symbols)),
        before_topics,
        after_topics,
        before_people,
        after_people,
        before.auto_reply,
        after.auto_reply,
        None if after.auto_reply else after.auto_reply_blocked_by,
    )
    if before.label != after.label:
        result.label_flips.append(change)
    if (before_topics, before_people) != (after_topics, after_people):
        result.routing_changes.append(change)
    if before.auto_reply != after.auto_reply:
        result.auto_reply_changes.append(change)


# --- presenting ----------------------------------------------------------------


class TextProgress:
    """``\\r  412/1200 [======    ]`` on a terminal; a plain line every ``every`` mails otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, *, width: int = 30, every: int = 500, minimum: int = 200) -> None:
        self.stream = stream
        self.width = width
        self.every = every
        self.minimum = minimum  # short runs print nothing
        self.tty = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if total < self.minimum:
            return
        if self.tty:
            if done == total or done % 10 == 0:
                filled = self.width * done // max(total, 1)
                bar = "=" * filled + " " * (self.width - filled)
                end = "\n" if done == total else ""
                self.stream.write(f"\r  {done}/{total} [{bar}]{end}")
                self.stream.flush()
        elif done % self.every == 0 or done == total:
            self.stream.write(f"  {done}/{total} mails decided again\n")
            self.stream.flush()


def _symbols(c: Change) -> str:
    parts = [f"+{s}" for s in c.added_symbols] + [f"-{s}" for s in c.removed_symbols]
    return " ".join(parts) or "(same rules; the score moved)"


def _line(c: Change) -> str:
    return f"  #{c.message_db_id:<6} {c.received_at:%Y-%m-%d}  {c.subject[:60]}"


def render_text(result: BacktestResult, *, limit: int = 50) -> str:
    """The report for a terminal: counts first, then at most ``limit`` mails per section."""
    since = f" since {result.since:%Y-%m-%d %H:%M}" if result.since else ""
    lines = [
        f"backtest: {result.total} stored mails{since}, each decided with the live version "
        f"(rules {result.baseline_rules_hash[:12]}, model {result.baseline_model}) and the candidate "
        f"(rules {result.candidate_rules_hash[:12]}, model {result.candidate_model})",
        "",
    ]
    by_direction = ", ".join(f"{k}: {v}" for k, v in sorted(result.flip_counts.items()))
    lines.append(f"label flips: {len(result.label_flips)}" + (f" ({by_direction})" if by_direction else ""))
    for c in result.label_flips[:limit]:
        lines.append(f"{_line(c)}\n      {c.flip}  score {c.before_score:+.2f} -> {c.after_score:+.2f}  {_symbols(c)}")
    lines.append(f"routing changes: {len(result.routing_changes)}")
    for c in result.routing_changes[:limit]:
        before = ", ".join(c.before_topics) or "(no topic)"
        after = ", ".join(c.after_topics) or "(no topic)"
        people = ""
        if c.before_people != c.after_people:
            people = f"; may take it: {len(c.before_people)} -> {len(c.after_people)} people"
        lines.append(f"{_line(c)}\n      topics {before} -> {after}{people}")
    gained = sum(1 for c in result.auto_reply_changes if c.after_reply)
    lost = len(result.auto_reply_changes) - gained
    lines.append(
        f"auto-reply changes: {len(result.auto_reply_changes)} (would now be answered: {gained}, no longer: {lost})"
    )
    for c in result.auto_reply_changes[:limit]:
        why = "would be answered" if c.after_reply else f"no longer answered: {c.reply_blocked_by}"
        lines.append(f"{_line(c)}\n      {why}")
    lines.append("")
    lines.append(f"unchanged: {result.unchanged} of {result.total}")
    if result.unreadable:
        lines.append(f"unreadable now (skipped): {result.unreadable}")
    if result.drift:
        lines.append(
            f"note: {result.drift} stored verdict(s) differ from what the live version decides now "
            "(made by earlier rules or an earlier model, or relabelled)"
        )
    shown = max(len(result.label_flips), len(result.routing_changes), len(result.auto_reply_changes))
    if shown > limit:
        lines.append(f"(at most {limit} mails listed per section; --json lists all)")
    return "\n".join(lines)
