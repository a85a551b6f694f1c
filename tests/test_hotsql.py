"""Statements run on the driver's cursor store and read exactly what SQLAlchemy would, on SQLite and
PostgreSQL (OMO_TEST_DB), and fail with SQLAlchemy's own exceptions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, insert, literal, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from omo_mailbot import db
from omo_mailbot.hotsql import HotStatement
from omo_mailbot.models import Case, Verdict, table_of

CASES = table_of(Case)
COLUMNS = [c.key for c in CASES.columns if not c.primary_key]
INSERT_CASE = HotStatement(insert(CASES).returning(CASES.c.id), COLUMNS)


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    engine = db.make_engine(db_url)
    sessions = db.session_factory(engine)
    with sessions() as s:
        yield s
        s.rollback()  # after an IntegrityError PostgreSQL's transaction can only be rolled back
    engine.dispose()


def _case(reference: str, **changes: object) -> dict[str, object]:
    at = datetime(2026, 11, 30, 23, 5, 7, 123456, tzinfo=timezone(timedelta(hours=1)))
    row: dict[str, object] = {
        "reference": reference,
        "status": "new",
        "label": "acute",
        "needs_human": True,
        "needs_human_reason": "ünïcode — and 'quotes'",
        "assignee": None,
        "topics": ["windpark", {"nested": [1, 2.5, None]}],
        "referred_to": None,
        "subject": "Re: demonstratie\tvanavond",
        "requester": "a@b.example",
        "created_at": at,
        "updated_at": at,
        "last_action_at": at,
    }
    return {**row, **changes}


def test_a_row_written_on_the_cursor_reads_back_as_one_written_by_sqlalchemy(session: Session) -> None:
    (fast_id,) = INSERT_CASE.row(session, _case("OMO-2026-0001"))
    slow_id = session.connection().execute(insert(CASES).returning(CASES.c.id), _case("OMO-2026-0002")).scalar_one()
    fast, slow = (session.get(Case, i) for i in (fast_id, slow_id))
    assert fast is not None and slow is not None
    columns = [c for c in COLUMNS if c != "reference"]
    assert {c: getattr(fast, c) for c in columns} == {c: getattr(slow, c) for c in columns}
    assert fast.created_at == datetime(2026, 11, 30, 22, 5, 7, 123456, tzinfo=UTC)  # stored as UTC, aware again
    assert fast.topics == ["windpark", {"nested": [1, 2.5, None]}] and fast.needs_human is True


def test_parameters_the_statement_gives_itself_need_not_be_passed(session: Session) -> None:
    (case_id,) = INSERT_CASE.row(session, _case("OMO-2026-0003"))
    relabel = HotStatement(update(CASES).where(CASES.c.id == bindparam("case")).values(label="preparation"))
    assert relabel.run(session, {"case": case_id}) == 1
    assert relabel.run(session, {"case": case_id + 1000}) == 0
    label = HotStatement(select(CASES.c.label).where(CASES.c.id == bindparam("case")))
    assert label.scalar(session, {"case": case_id}) == "preparation"
    assert label.scalar(session, {"case": case_id + 1000}) is None


def test_a_missing_parameter_is_an_error_not_a_null(session: Session) -> None:
    row = _case("OMO-2026-0004")
    del row["subject"]
    with pytest.raises(KeyError, match="subject"):
        INSERT_CASE.row(session, row)


def test_driver_errors_come_out_as_sqlalchemy_exceptions(session: Session) -> None:
    INSERT_CASE.row(session, _case("OMO-2026-0005"))
    with pytest.raises(IntegrityError):
        INSERT_CASE.row(session, _case("OMO-2026-0005"))  # the reference is unique


def test_a_foreign_key_is_enforced(session: Session) -> None:
    verdicts = table_of(Verdict)
    insert_verdict = HotStatement(insert(verdicts), [c.key for c in verdicts.columns if not c.primary_key])
    row = {c.key: None for c in verdicts.columns if not c.primary_key}
    now = datetime.now(UTC)
    row.update(message_id=999_999, label="acute", score=1.0, threshold=0.5, hits=[], automated_reasons=[])
    row.update(auto_reply=False, topics=[], rules_hash="x", model_version="y", decided_at=now)
    with pytest.raises(IntegrityError):
        insert_verdict.run(session, row)


@pytest.mark.skipif(os.environ.get("OMO_TEST_DB") != "postgresql", reason="a server that drops the connection")
def test_a_dropped_connection_is_invalidated_and_the_rollback_succeeds(db_url: str) -> None:
    engine = db.make_engine(db_url)
    sessions = db.session_factory(engine)
    one_more = HotStatement(select(literal(1) + bindparam("x")))
    with sessions() as s:
        backend = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with pytest.raises(OperationalError) as raised:
            one_more.row(s, {"x": 1})
        assert raised.value.connection_invalidated
        s.rollback()  # no second error from the dead connection
        assert one_more.row(s, {"x": 1}) == (2,)  # and the next statement gets a live one
    engine.dispose()
