"""The database adapter: engines, sessions, the schema check and migrations.

SQLite (the embedded default) gets WAL, a busy timeout and ``BEGIN IMMEDIATE``
for every transaction, because Python 3.11's sqlite3 otherwise upgrades read
transactions to write ones and fails with SQLITE_BUSY under concurrency.
PostgreSQL is used as is. Alembic lives in migrations/ at the repository root.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .errors import InstanceLocked, SchemaOutdated

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``. On SQLite every transaction takes the write lock at BEGIN (IMMEDIATE),
    except those of :func:`reader`, which begin deferred and never wait for the writer."""
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 30000")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            deferred = conn.get_execution_options().get(READER, False)
            conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

        return engine
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    # a server that vanishes (failover, a cut network) must surface as an error, not a hang: bounded connect,
    # and TCP keepalives that declare a silent peer dead after about a minute (30 s idle + 3 probes of 10 s)
    alive = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10}
    return create_engine(url, pool_pre_ping=True, connect_args={**alive, "keepalives_count": 3}, **kwargs)


READER = "omo_reader"


def reader(engine: Engine) -> Engine:
    """The same engine and pool for code that only reads (health checks, gauges, the outbox's next
    due time). On SQLite its transactions begin DEFERRED: in WAL mode a reader then never waits for
    the writer, which holds its lock for a whole batch of mails during a backlog. Nothing that writes
    may use it (a deferred transaction that starts writing can fail with "database is locked")."""
    return engine.execution_options(**{READER: True})


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with reader(engine).connect() as conn:  # a read: it must not wait for (or take) SQLite's write lock
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def require_current_schema(engine: Engine) -> None:
    """Refuse to run on a database that is not at the newest migration."""
    url = engine.url.render_as_string(hide_password=False)
    head, current = head_revision(url), current_revision(engine)
    if current != head:
        state = "is empty" if current is None else f"is at revision {current}, the code needs {head}"
        raise SchemaOutdated(f"the database {state}; run `omo-mailbot db upgrade` first")


@contextmanager
def single_instance_lock(url: str) -> Iterator[None]:
    """SQLite serves one instance: hold an exclusive lock file beside the database."""
    if not is_sqlite(url):
        yield
        return
    db_path = url.split(":///", 1)[-1] or "memory"
    lock_path = Path(db_path + ".lock") if db_path != ":memory:" else None
    if lock_path is None:
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstanceLocked(
                f"another omo-mailbot instance is already running on {db_path}; SQLite serves one "
                "instance only (use PostgreSQL in database.url to run several)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)
