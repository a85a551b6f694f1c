"""The hot path's statements, run on the database driver's cursor.

For every mail of a backlog the pipeline runs five to nine small statements. Through
SQLAlchemy each one costs tens of microseconds of Python before the driver sees it
(an execution context, parameter processing, a result object), and a row written
through the ORM costs more again. Storing a mail cost 1.47 ms of CPU, of which the
database's own work was 0.27 ms; written this way it costs 0.69 ms (BENCHMARKS.md).

A :class:`HotStatement` is an ordinary SQLAlchemy Core statement, compiled once per
engine's dialect. Running it converts each parameter with the column type's own bind
processor for that dialect (so a value is stored exactly as SQLAlchemy would store
it: timestamps as naive UTC, JSON as text, ...) and hands the SQL to a cursor of
the session's connection, inside the session's transaction. Driver errors come out
as SQLAlchemy's exceptions (``IntegrityError``, ``OperationalError``), as the rest
of the code expects, and a connection the server dropped is invalidated, as
SQLAlchemy would.

What it skips, and why that is safe where it is used: the ORM's autoflush (callers
that read what the session may hold unwritten flush first), connection events (none
are listened to per statement), and "expanding" IN parameters (not used here).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the parameters, in the order the SQL wants them in positional styles
    keys: tuple[str, ...]  # their names as the SQL spells them in named styles
    processors: tuple[Processor | None, ...]  # per name: the column type's bind processor, if any
    positional: bool
    fixed: dict[str, Any]  # parameters the statement itself gives a value (``.values(value=1)``)


class HotStatement:
    """A Core statement to run many times on the driver's cursor (see the module's docstring).

    ``columns`` names the columns an INSERT without ``values()`` gets, as in
    ``connection.execute(insert(table), {...})``; other statements use ``bindparam`` names.
    """

    def __init__(self, statement: ClauseElement, columns: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.columns = list(columns) if columns is not None else None
        # per engine's dialect: what it was configured with (JSON serializer, server version) shapes both
        self._by_dialect: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect)
        if found is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.columns)
            assert isinstance(compiled, SQLCompiler)
            # the names as the SQL uses them (``binds`` also holds each literal under an internal key)
            used = tuple(dict.fromkeys(compiled.bind_names.values()))
            names = tuple(compiled.positiontup or ()) if compiled.positional else used
            binds = compiled.binds
            processors = tuple(binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
            keys = tuple(compiled.escaped_bind_names.get(n, n) for n in names)
            fixed = {n: binds[n].effective_value for n in names if not binds[n].required}  # literals in the SQL
            found = _Compiled(compiled.string, names, keys, processors, compiled.positional, fixed)
            self._by_dialect[dialect] = found
        return found

    def run(self, session: Session, params: Mapping[str, Any]) -> int:
        """Run with ``params`` in the session's transaction; how many rows it changed."""
        cursor = self._execute(session, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def scalar(self, session: Session, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = self.rows(session, params)
        return rows[0][0] if rows else None

    def row(self, session: Session, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The one row the statement returns (an aggregate, an INSERT's RETURNING)."""
        rows = self.rows(session, params)
        if not rows:
            raise LookupError("the statement returned no row")
        return tuple(rows[0])

    def rows(self, session: Session, params: Mapping[str, Any]) -> list[Any]:
        """Every row the statement returns."""
        cursor = self._execute(session, params)
        try:
            return list(cursor.fetchall())  # all of them: SQLite finishes a RETURNING statement only then
        finally:
            cursor.close()

    def _execute(self, session: Session, params: Mapping[str, Any]) -> Any:
        connection = session.connection()
        dialect = connection.dialect
        compiled = self._compiled(dialect)
        given = {**compiled.fixed, **params} if compiled.fixed else params
        values = [
            value if process is None else process(value)
            for value, process in zip(map(given.__getitem__, compiled.names), compiled.processors, strict=True)
        ]
        bound = values if compiled.positional else dict(zip(compiled.keys, values, strict=True))
        driver_connection = connection.connection.dbapi_connection
        cursor = driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.sql, bound)
        except dialect.loaded_dbapi.Error as exc:
            # as SQLAlchemy does: a connection the server dropped is invalidated, so that the rollback that
            # follows does not fail on it and the pool does not hand it out again
            lost = dialect.is_disconnect(exc, driver_connection, cursor)
            with contextlib.suppress(Exception):
                cursor.close()
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                compiled.sql, bound, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=dialect
            ) from exc
        return cursor
