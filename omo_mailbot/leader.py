"""Leader election: with several instances on one PostgreSQL database, exactly one reads the mailbox.

The leader holds a session-level ``pg_try_advisory_lock`` on a dedicated
connection for as long as it leads. PostgreSQL releases the lock the moment
that connection ends, so a leader that dies (SIGKILL, lost network, a killed
backend) hands over without any timeout of ours; a follower retrying every few
seconds takes over. The leader re-checks, periodically, that its connection is
alive and still holds the lock; when it does not, it stops leading at once.

Each new leadership also bumps the ``leases`` row of the same name: the epoch is
a fencing counter that shows in the logs and tells an operator who leads now.
Work done twice by an old leader that has not yet noticed its loss is harmless
by construction: mail is deduplicated by its hash and its (UIDVALIDITY, UID) in
the deciding transaction, and outbox rows are claimed with SKIP LOCKED.

SQLite serves one instance (:func:`db.single_instance_lock`), which therefore
always leads: :class:`SoleLeader`.
"""

from __future__ import annotations

import logging
import zlib
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from .models import Lease

log = logging.getLogger(__name__)


class Leadership(Protocol):
    """Who may read the mailbox and run the daily jobs."""

    epoch: int
    reachable: bool  # False after a failed attempt to reach the database

    def try_acquire(self, now: datetime) -> bool: ...
    def still_leading(self) -> bool: ...
    def release(self) -> None: ...


class SoleLeader:
    """The single instance (SQLite): always the leader."""

    def __init__(self) -> None:
        self.epoch = 1
        self.reachable = True

    def try_acquire(self, now: datetime) -> bool:
        return True

    def still_leading(self) -> bool:
        return True

    def release(self) -> None:
        return None


def lock_key(name: str) -> int:
    """A stable 31-bit advisory lock key for a leadership name (one per mailbox)."""
    return zlib.crc32(f"omo-mailbot:{name}".encode()) & 0x7FFFFFFF


class AdvisoryLockLeader:
    """Leadership through a PostgreSQL session advisory lock held on its own connection."""

    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        *,
        name: str,
        holder: str,
        lease_seconds: float = 30.0,
    ) -> None:
        self.engine = engine
        self.sessions = sessions
        self.name = name[:60]
        self.holder = holder[:120]
        self.key = lock_key(name)
        self.lease = timedelta(seconds=lease_seconds)
        self.epoch = 0
        self.reachable = True
        self._conn: Connection | None = None

    def try_acquire(self, now: datetime) -> bool:
        """Take the lock if nobody holds it; True when this instance leads (also when it already did)."""
        if self._conn is not None:
            return self.still_leading()
        conn: Connection | None = None
        try:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
        except Exception as exc:
            log.warning("leader election: database unreachable", extra={"error": _short(exc)})
            self.reachable = False
            _close(conn)
            return False
        self.reachable = True
        if not got:
            _close(conn)
            return False
        self._conn = conn
        try:
            self.epoch = self._record(now)
        except Exception as exc:
            log.warning("leader election: could not record the lease row", extra={"error": _short(exc)})
            self.release()
            return False
        log.info("leading: this instance now reads the mailbox", extra={"holder": self.holder, "epoch": self.epoch})
        return True

    def _record(self, now: datetime) -> int:
        with self.sessions.begin() as s:
            row = s.execute(select(Lease).where(Lease.name == self.name).with_for_update()).scalar_one_or_none()
            if row is None:
                row = Lease(name=self.name, holder=self.holder, epoch=1, expires_at=now + self.lease)
                s.add(row)
            else:
                row.holder, row.epoch, row.expires_at = self.holder, row.epoch + 1, now + self.lease
            return int(row.epoch)

    def still_leading(self) -> bool:
        """Is the lock connection alive and does it still hold the lock? Gives up leadership when not."""
        conn = self._conn
        if conn is None:
            return False
        try:
            held = conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND granted AND classid = 0 AND objid = :k AND objsubid = 1"
                ),
                {"k": self.key},
            ).scalar()
        except Exception as exc:
            log.warning("leadership lost: the lock connection failed", extra={"error": _short(exc)})
            self._drop()
            return False
        if not held:
            log.warning("leadership lost: the advisory lock is gone", extra={"epoch": self.epoch})
            self._drop()
            return False
        return True

    def release(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        except Exception as exc:
            log.info("leader release: connection already gone", extra={"error": _short(exc)})
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # a connection that may still hold the lock must not go back to the pool
            try:
                conn.invalidate()
            finally:
                _close(conn)


def _close(conn: Connection | None) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except Exception as exc:
        log.debug("closing the lock connection failed", extra={"error": _short(exc)})


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
