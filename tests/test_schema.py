"""The migrations build what the models declare, and the hot queries use the indexes meant for them."""

from __future__ import annotations

from sqlalchemy import inspect

from omo_mailbot import autoreply, db
from omo_mailbot.models import Base


def test_the_migrations_build_every_index_the_models_declare(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    db.upgrade(url)
    found = inspect(db.make_engine(url))
    for table in Base.metadata.sorted_tables:
        declared = {index.name: [c.name for c in index.columns] for index in table.indexes}
        built = {i["name"]: list(i["column_names"]) for i in found.get_indexes(table.name)}
        for name, columns in declared.items():
            assert built.get(name) == columns, f"{table.name}.{name}"


def test_the_auto_reply_brakes_do_not_read_the_whole_outbox(tmp_path):
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    compiled = autoreply._BRAKES.statement.compile(dialect=engine.dialect)
    values = {"recipient": "a@b.nl", "tagged": "a+%@b.nl", "thread": "t"}
    positional = tuple(values.get(name, "2026-11-30 00:00:00") for name in compiled.positiontup or ())
    with engine.connect() as conn:
        plan = [str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional)]
    outbox = [step for step in plan if "outbox" in step]
    assert outbox and not any(step.startswith("SCAN outbox") for step in outbox), plan
    # the count per mailbox and the one in total never read a table row: the recipient is in the index
    assert sum("COVERING INDEX ix_outbox_brakes" in step for step in outbox) == 2, plan
