"""The outbox: mail is queued in the deciding transaction and sent afterwards.

A row is claimed (``pending`` -> ``sending`` with a lease, committed) just
before its SMTP conversation, one row at a time, and marked ``sent`` after the
server accepted it. A crash in between leaves a ``sending`` row whose lease
expires; :meth:`OutboxWorker.reap` returns it to ``pending`` and that one mail
may go out twice, nothing else can. Claiming one row at a time keeps each lease
about one SMTP conversation long (a lease over a whole batch ran out while the
batch was still being sent, and another worker sent the rest again), and every
result is written only while this worker still holds the row.
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
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from .config import SmtpConfig
from .errors import PermanentDeliveryError, ReceiverUnavailable, TransientDeliveryError
from .hotsql import HotStatement
from .mailer import Mailer
from .models import OutboxMail, table_of

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


_OUTBOX = table_of(OutboxMail)
_INSERT = HotStatement(insert(_OUTBOX).returning(_OUTBOX.c.id), [c.key for c in _OUTBOX.columns if not c.primary_key])


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
) -> int:
    """Queue a mail in the caller's transaction: one INSERT of a row that is pending, due now and never
    tried, and its id (an answer per acute mail of a backlog goes through here)."""
    row = {
        "kind": kind,
        "message_id_header": message_id,
        "recipient": recipient.lower(),
        "envelope_from": envelope_from,
        "thread_key": thread_key,
        "raw": raw,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "lease_until": None,
        "lease_holder": None,
        "last_error": None,
        "created_at": now,
        "sent_at": None,
        "source_message_id": source_message_id,
        "case_id": case_id,
    }
    (row_id,) = _INSERT.row(session, row)
    return int(row_id)


def _claim(skip_locked: bool) -> HotStatement:
    """Lease the oldest due row: one UPDATE ... RETURNING of the row a sub-select picks; on PostgreSQL
    the sub-select skips rows another instance is claiming, and the UPDATE checks ``pending`` again."""
    due = (
        select(_OUTBOX.c.id)
        .where(_OUTBOX.c.status == "pending", _OUTBOX.c.next_attempt_at <= bindparam("now"))
        .order_by(_OUTBOX.c.id)
        .limit(1)
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    return HotStatement(
        update(_OUTBOX)
        .where(_OUTBOX.c.id == due.scalar_subquery(), _OUTBOX.c.status == "pending")
        .values(
            status="sending",
            lease_until=bindparam("lease_until"),
            lease_holder=bindparam("holder"),
            attempts=_OUTBOX.c.attempts + 1,
        )
        .returning(_OUTBOX.c.id, _OUTBOX.c.envelope_from, _OUTBOX.c.recipient, _OUTBOX.c.raw, _OUTBOX.c.attempts)
    )


# Built once: building the claim for every reply cost about a third of the claim (py-spy of a backlog).
_CLAIM, _CLAIM_SKIP_LOCKED = _claim(skip_locked=False), _claim(skip_locked=True)
_MARK_SENT = HotStatement(
    update(_OUTBOX)
    .where(_OUTBOX.c.id == bindparam("row"), _OUTBOX.c.status == "sending")
    .where(_OUTBOX.c.lease_holder == bindparam("holder"))
    .values(status="sent", sent_at=bindparam("at"), lease_until=None, last_error=None)
)


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
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.sessions = sessions
        self.readers = readers or sessions  # for next_due_in, which only reads
        self.mailer = mailer
        self.cfg = cfg
        self.holder = holder
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.stopping = stopping  # checked before each claim: a stopping service sends nothing new
        self._sent_times: deque[float] = deque()
        self._outages = 0  # consecutive sends the receiver was unavailable for (spaces the retries)

    def _backoff(self, attempts: int) -> timedelta:
        seconds = min(self.cfg.backoff_max_seconds, self.cfg.backoff_base_seconds * 2 ** max(0, attempts - 1))
        return timedelta(seconds=seconds)

    def reap(self) -> int:
        """Return rows whose lease expired (a crashed sender) to pending."""
        now = self.clock()
        with self.sessions.begin() as s:
            result = s.connection().execute(
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

    def _claim_next(self) -> tuple[int, str, str, bytes, int] | None:
        """Lease the oldest due row to this worker (committed): (id, envelope from, recipient, raw, attempt).

        One UPDATE ... RETURNING of the row a sub-select picks, so neither an ORM object nor a second
        statement is needed; on PostgreSQL the sub-select skips rows another instance is claiming, and
        ``status = 'pending'`` is checked again by the UPDATE itself.
        """
        now = self.clock()
        with self.sessions.begin() as s:
            claim = _CLAIM_SKIP_LOCKED if s.connection().dialect.name == "postgresql" else _CLAIM
            rows = claim.rows(s, {"now": now, "lease_until": now + self.lease, "holder": self.holder})
            if not rows:
                return None
            row_id, envelope_from, recipient, raw, attempts = rows[0]
            return int(row_id), str(envelope_from), str(recipient), bytes(raw), int(attempts)

    def _allowance(self) -> int:
        horizon = time.monotonic() - 60.0
        while self._sent_times and self._sent_times[0] < horizon:
            self._sent_times.popleft()
        return max(0, self.cfg.max_per_minute - len(self._sent_times))

    def run_once(self, limit: int = 50) -> SendStats:
        """Send up to ``limit`` due rows (fewer when throttled or stopping), claiming each just before it goes."""
        stats = SendStats()
        allowance = self._allowance()
        if allowance == 0:
            stats.throttled = True
            return stats
        for _ in range(min(limit, allowance)):
            if self.stopping():
                break
            claimed = self._claim_next()
            if claimed is None or not self._send_one(*claimed, stats=stats):
                break
        return stats

    def _send_one(
        self, row_id: int, envelope_from: str, recipient: str, raw: bytes, attempts: int, *, stats: SendStats
    ) -> bool:
        """Send one claimed row and record the result; False when the receiver is unavailable (stop for now)."""
        started = time.perf_counter()
        try:
            self.mailer.send(envelope_from, recipient, raw)
        except ReceiverUnavailable as exc:
            # the receiver is down or refuses our login, not this mail: the attempt does not count against
            # it, and nothing may overtake it once the receiver is back
            self._outages += 1
            self._hold(row_id, str(exc), stats=stats)
            return False
        except TransientDeliveryError as exc:
            self._record_failure(row_id, attempts, str(exc), permanent=False, stats=stats)
            return True
        except PermanentDeliveryError as exc:
            self._record_failure(row_id, attempts, str(exc), permanent=True, stats=stats)
            return True
        except Exception as exc:  # a bug in a mailer must not lose the row
            self._record_failure(row_id, attempts, f"{type(exc).__name__}: {exc}", permanent=False, stats=stats)
            return True
        self._outages = 0
        self._sent_times.append(time.monotonic())
        with self.sessions.begin() as s:
            recorded = _MARK_SENT.run(s, {"row": row_id, "holder": self.holder, "at": self.clock()})
        stats.sent += 1
        if not recorded:
            # the lease ran out during the send and another worker took the row: it may send it again
            log.warning("outbox sent after its lease ran out", extra={"outbox_id": row_id, "attempt": attempts})
        log.info(
            "outbox sent",
            extra={"outbox_id": row_id, "attempt": attempts, "send_ms": _ms(time.perf_counter() - started)},
        )
        return True

    def _mine(self, row_id: int) -> Any:
        """An UPDATE of ``row_id`` that only touches it while this worker still holds its lease."""
        return update(OutboxMail).where(
            OutboxMail.id == row_id, OutboxMail.status == "sending", OutboxMail.lease_holder == self.holder
        )

    def _record_failure(self, row_id: int, attempts: int, error: str, *, permanent: bool, stats: SendStats) -> None:
        give_up = permanent or attempts >= self.cfg.max_attempts
        now = self.clock()
        with self.sessions.begin() as s:
            s.connection().execute(
                self._mine(row_id).values(
                    status="failed" if give_up else "pending",
                    lease_until=None,
                    lease_holder=None,
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

    def _hold(self, row_id: int, error: str, *, stats: SendStats) -> None:
        """The receiver is unavailable: give the row back untried, due after a backoff that grows with the
        outage, and keep queue order (no row queued after it becomes due before it)."""
        until = self.clock() + self._backoff(self._outages)
        with self.sessions.begin() as s:
            s.connection().execute(
                self._mine(row_id).values(
                    status="pending",
                    lease_until=None,
                    lease_holder=None,
                    attempts=OutboxMail.attempts - 1,
                    last_error=error[:2000],
                    next_attempt_at=until,
                )
            )
            s.connection().execute(
                update(OutboxMail)
                .where(OutboxMail.status == "pending", OutboxMail.id > row_id, OutboxMail.next_attempt_at < until)
                .values(next_attempt_at=until)
            )
        stats.retried += 1
        log.warning(
            "SMTP receiver unavailable; the outbox waits",
            extra={"outbox_id": row_id, "outages": self._outages, "error": error[:200]},
        )

    def next_due_in(self) -> float | None:
        """Seconds until the next pending row is due, or None when nothing is pending."""
        with self.readers() as s:
            due = s.execute(select(func.min(OutboxMail.next_attempt_at)).where(OutboxMail.status == "pending")).scalar()
        if due is None:
            return None
        return max(0.0, (due - self.clock()).total_seconds())
