"""The outbox: mail is queued in the deciding transaction and sent afterwards.

A row is claimed (``pending`` -> ``sending`` with a lease, committed) before the
SMTP conversation, and marked ``sent`` after the server accepted it. A crash
in between leaves a ``sending`` row whose lease expires; :meth:`OutboxWorker.reap`
returns it to ``pending`` and that one mail may go out twice, nothing else can.
Failures back off exponentially up to ``smtp.max_attempts``; then the row is
parked as ``failed`` for a human. On PostgreSQL rows are claimed with
``FOR UPDATE SKIP LOCKED`` so several instances never claim the same row.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from .config import SmtpConfig
from .errors import PermanentDeliveryError, ReceiverUnavailable, TransientDeliveryError
from .mailer import Mailer
from .models import OutboxMail

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def enqueue(
    session: Session,
    *,
    kind: str,
    raw: bytes,
    recipient: str,
    message_id: str,
    now: datetime,
    envelope_from: str = "",
    thread_key: str | None = None,
    source_message_id: int | None = None,
    case_id: int | None = None,
) -> OutboxMail:
    row = OutboxMail(
        kind=kind,
        message_id_header=message_id,
        recipient=recipient.lower(),
        envelope_from=envelope_from,
        thread_key=thread_key,
        raw=raw,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        source_message_id=source_message_id,
        case_id=case_id,
    )
    session.add(row)
    session.flush()
    return row


@dataclass
class SendStats:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    throttled: bool = False


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class OutboxWorker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        mailer: Mailer,
        cfg: SmtpConfig,
        *,
        holder: str,
        clock: Clock,
        lease_seconds: float = 60.0,
        readers: sessionmaker[Session] | None = None,
    ) -> None:
        self.sessions = sessions
        self.readers = readers or sessions  # for next_due_in, which only reads
        self.mailer = mailer
        self.cfg = cfg
        self.holder = holder
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self._sent_times: deque[float] = deque()

    def _backoff(self, attempts: int) -> timedelta:
        seconds = min(self.cfg.backoff_max_seconds, self.cfg.backoff_base_seconds * 2 ** max(0, attempts - 1))
        return timedelta(seconds=seconds)

    def reap(self) -> int:
        """Return rows whose lease expired (a crashed sender) to pending."""
        now = self.clock()
        with self.sessions.begin() as s:
            result = s.execute(
                update(OutboxMail)
                .where(OutboxMail.status == "sending", OutboxMail.lease_until < now)
                .values(
                    status="pending",
                    lease_until=None,
                    lease_holder=None,
                    last_error="lease expired: the sender stopped before recording the result",
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def _claim(self, limit: int) -> list[tuple[int, str, str, bytes, int]]:
        now = self.clock()
        with self.sessions.begin() as s:
            stmt = (
                select(OutboxMail)
                .where(OutboxMail.status == "pending", OutboxMail.next_attempt_at <= now)
                .order_by(OutboxMail.id)
                .limit(limit)
            )
            if s.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = list(s.execute(stmt).scalars())
            claimed = []
            for row in rows:
                row.status = "sending"
                row.lease_until = now + self.lease
                row.lease_holder = self.holder
                row.attempts += 1
                claimed.append((row.id, row.envelope_from, row.recipient, row.raw, row.attempts))
            return claimed

    def _allowance(self) -> int:
        horizon = time.monotonic() - 60.0
        while self._sent_times and self._sent_times[0] < horizon:
            self._sent_times.popleft()
        return max(0, self.cfg.max_per_minute - len(self._sent_times))

    def run_once(self, limit: int = 50) -> SendStats:
        stats = SendStats()
        allowance = self._allowance()
        if allowance == 0:
            stats.throttled = True
            return stats
        claimed = self._claim(min(limit, allowance))
        for index, (row_id, envelope_from, recipient, raw, attempts) in enumerate(claimed):
            started = time.perf_counter()
            try:
                self.mailer.send(envelope_from, recipient, raw)
            except ReceiverUnavailable as exc:
                # the receiver is down, not this mail: nothing may overtake it once the receiver is back
                self._record_failure(row_id, attempts, str(exc), permanent=False, stats=stats)
                self._hold_behind(row_id, [c[0] for c in claimed[index + 1 :]])
                break
            except TransientDeliveryError as exc:
                self._record_failure(row_id, attempts, str(exc), permanent=False, stats=stats)
                continue
            except PermanentDeliveryError as exc:
                self._record_failure(row_id, attempts, str(exc), permanent=True, stats=stats)
                continue
            except Exception as exc:  # a bug in a mailer must not lose the row
                self._record_failure(row_id, attempts, f"{type(exc).__name__}: {exc}", permanent=False, stats=stats)
                continue
            self._sent_times.append(time.monotonic())
            with self.sessions.begin() as s:
                s.execute(
                    update(OutboxMail)
                    .where(OutboxMail.id == row_id)
                    .values(status="sent", sent_at=self.clock(), lease_until=None, last_error=None)
                )
            stats.sent += 1
            log.info(
                "outbox sent",
                extra={"outbox_id": row_id, "attempt": attempts, "send_ms": _ms(time.perf_counter() - started)},
            )
        return stats

    def _record_failure(self, row_id: int, attempts: int, error: str, *, permanent: bool, stats: SendStats) -> None:
        give_up = permanent or attempts >= self.cfg.max_attempts
        now = self.clock()
        with self.sessions.begin() as s:
            s.execute(
                update(OutboxMail)
                .where(OutboxMail.id == row_id)
                .values(
                    status="failed" if give_up else "pending",
                    lease_until=None,
                    last_error=error[:2000],
                    next_attempt_at=now if give_up else now + self._backoff(attempts),
                )
            )
        if give_up:
            stats.failed += 1
            log.warning(
                "outbox parked as failed", extra={"outbox_id": row_id, "attempts": attempts, "error": error[:200]}
            )
        else:
            stats.retried += 1
            log.info("outbox send failed, will retry", extra={"outbox_id": row_id, "attempts": attempts})

    def _hold_behind(self, failed_id: int, unsent: list[int]) -> None:
        """Keep queue order through an outage: claimed rows go back untried, and no row queued
        after ``failed_id`` becomes due before it."""
        with self.sessions.begin() as s:
            until = s.execute(select(OutboxMail.next_attempt_at).where(OutboxMail.id == failed_id)).scalar_one()
            if unsent:
                s.execute(
                    update(OutboxMail)
                    .where(OutboxMail.id.in_(unsent), OutboxMail.status == "sending")
                    .values(
                        status="pending",
                        lease_until=None,
                        lease_holder=None,
                        attempts=OutboxMail.attempts - 1,
                        next_attempt_at=until,
                    )
                )
            s.execute(
                update(OutboxMail)
                .where(OutboxMail.status == "pending", OutboxMail.id > failed_id, OutboxMail.next_attempt_at < until)
                .values(next_attempt_at=until)
            )

    def next_due_in(self) -> float | None:
        """Seconds until the next pending row is due, or None when nothing is pending."""
        with self.readers() as s:
            due = s.execute(select(func.min(OutboxMail.next_attempt_at)).where(OutboxMail.status == "pending")).scalar()
        if due is None:
            return None
        return max(0.0, (due - self.clock()).total_seconds())
