"""Retention (AVG/GDPR): after ``privacy.retention_days`` the mail itself is removed.

What goes: the raw bytes of every received mail and the text read from it
(``messages.raw``, ``new_text``, ``stripped_text``), and the raw bytes of mail we
sent or gave up on (``outbox.raw`` of ``sent`` and ``failed`` rows). What stays:
the metadata that makes a case and its history understandable (subject, sender,
dates, verdict with its rule hits, case events), so the figures and the audit
trail survive. A purged message carries ``purged_at``; purging is idempotent.
Pending outbox rows are never touched: they still have to go out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from .models import Message, OutboxMail

log = logging.getLogger(__name__)
FINISHED = ("sent", "failed")


@dataclass(frozen=True)
class PurgeReport:
    cutoff: datetime
    messages: int
    outbox: int
    dry_run: bool

    def describe(self) -> str:
        verb = "would purge" if self.dry_run else "purged"
        return (
            f"{verb} the bodies of {self.messages} received mails and {self.outbox} sent or failed outgoing mails "
            f"older than {self.cutoff.isoformat(timespec='seconds')}"
        )


def cutoff_for(now: datetime, retention_days: int) -> datetime:
    return now - timedelta(days=retention_days)


def purge(sessions: sessionmaker[Session], retention_days: int, now: datetime, *, dry_run: bool = False) -> PurgeReport:
    """Remove mail content older than the retention period (or count it, with ``dry_run``)."""
    cutoff = cutoff_for(now, retention_days)
    old_messages = (Message.received_at < cutoff, Message.purged_at.is_(None))
    old_outbox = (OutboxMail.created_at < cutoff, OutboxMail.status.in_(FINISHED), func.length(OutboxMail.raw) > 0)
    with sessions.begin() as s:
        if dry_run:
            n_msg = s.execute(select(func.count()).select_from(Message).where(*old_messages)).scalar_one()
            n_out = s.execute(select(func.count()).select_from(OutboxMail).where(*old_outbox)).scalar_one()
        else:
            n_msg = _rowcount(
                s.execute(
                    update(Message)
                    .where(*old_messages)
                    .values(raw=None, new_text=None, stripped_text=None, purged_at=now)
                    .execution_options(synchronize_session=False)
                )
            )
            n_out = _rowcount(
                s.execute(
                    update(OutboxMail).where(*old_outbox).values(raw=b"").execution_options(synchronize_session=False)
                )
            )
    report = PurgeReport(cutoff, int(n_msg), int(n_out), dry_run)
    log.info(
        "retention purge" + (" (dry run)" if dry_run else ""),
        extra={"messages": report.messages, "outbox": report.outbox, "retention_days": retention_days},
    )
    return report


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
