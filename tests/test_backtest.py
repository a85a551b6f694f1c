"""Backtest: stored mail decided again with candidate rules shows exactly what the change would do."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from omo_mailbot.backtest import Side, TextProgress, run_backtest
from omo_mailbot.models import Case, Message, OutboxMail, Verdict
from omo_mailbot.rules import load_rules
from omo_mailbot.service import build_decider, open_database

from . import stored_mail

WIND_RULE = """
[[rule]]
symbol = "WIND_FARM_CONFLICT"
description = "Any mail about a wind farm is treated as acute (a deliberately bad idea)"
weight = 0.5
words = ["windpark*"]
force = "acute"
"""


@pytest.fixture
def stored(tmp_path, make_config):
    """Seven mails (two acute, four preparation, one out-of-office) decided and stored with the shipped rules."""
    raws = stored_mail.stored_set()
    box = stored_mail.make_maildir(tmp_path / "Maildir", list(raws.values()))
    cfg = stored_mail.maildir_config(make_config, tmp_path, box)
    stored_mail.process_all(cfg)
    return cfg, stored_mail.message_ids(raws)


def _snapshot(cfg) -> tuple[object, ...]:
    engine, sessions = open_database(cfg)
    with sessions() as s:
        verdicts = s.execute(select(Verdict.message_id, Verdict.label, Verdict.score, Verdict.rules_hash)).all()
        counts = tuple(
            s.execute(select(func.count()).select_from(model)).scalar_one() for model in (Message, Case, OutboxMail)
        )
    engine.dispose()
    return tuple(sorted(verdicts)), counts


def _backtest(cfg, candidate_dir: Path, **kw):
    engine, sessions = open_database(cfg)
    live = build_decider(cfg)
    candidate = live.with_rules(load_rules(candidate_dir))
    try:
        return run_backtest(sessions, Side(live), Side(candidate), **kw)
    finally:
        engine.dispose()


def _ids_of(cfg, ids: dict[str, str], names: set[str]) -> set[int]:
    engine, sessions = open_database(cfg)
    with sessions() as s:
        rows = s.execute(select(Message.id, Message.message_id_header)).all()
    engine.dispose()
    wanted = {ids[n] for n in names}
    return {db_id for db_id, header in rows if header in wanted}


def test_a_new_rule_flips_exactly_the_mails_it_matches_and_touches_nothing(tmp_path, stored):
    cfg, ids = stored
    candidate = stored_mail.copy_rules(tmp_path)
    (candidate / "wind.toml").write_text(WIND_RULE)
    before = _snapshot(cfg)

    result = _backtest(cfg, candidate)

    assert result.total == 7
    flipped = {c.message_db_id for c in result.label_flips}
    # the three preparation mails that mention a wind farm; not the acute one, not the out-of-office
    assert flipped == _ids_of(cfg, ids, {"preparation", "wind_preparation", "wind_question"})
    assert {c.flip for c in result.label_flips} == {"preparation -> acute"}
    assert all(c.added_symbols == ("WIND_FARM_CONFLICT",) and not c.removed_symbols for c in result.label_flips)
    assert all(c.stored_label == "preparation" for c in result.label_flips)
    assert {c.message_db_id for c in result.auto_reply_changes} == flipped  # each would now get an answer
    assert all(c.after_reply for c in result.auto_reply_changes)
    assert result.routing_changes == [] and result.drift == 0
    assert result.unchanged == 4
    assert _snapshot(cfg) == before  # nothing stored, nothing queued


def test_a_changed_weight_flips_the_acute_mails_that_relied_on_it(tmp_path, stored):
    cfg, ids = stored
    candidate = stored_mail.copy_rules(tmp_path)
    path = candidate / "acute.toml"
    old_weight = next(r.weight for r in load_rules(candidate).rules if r.symbol == "UNREST_NOW")
    rule_weight = re.compile(r'(symbol = "UNREST_NOW"\n(?:[^\[].*\n)*?)weight = [-+0-9.]+')
    text, n = rule_weight.subn(r"\1weight = -50.0", path.read_text())
    assert n == 1
    path.write_text(text)

    result = _backtest(cfg, candidate)

    assert {c.message_db_id for c in result.label_flips} == _ids_of(cfg, ids, {"acute", "acute_wind"})
    assert {c.flip for c in result.label_flips} == {"acute -> preparation"}
    for change in result.label_flips:
        assert change.added_symbols == () and change.removed_symbols == ()  # same rules fired; the score moved
        assert change.after_score == pytest.approx(change.before_score - old_weight - 50.0)
    assert [c.after_reply for c in result.auto_reply_changes] == [False, False]
    assert all("only acute mail is answered" in (c.reply_blocked_by or "") for c in result.auto_reply_changes)


def test_identical_rules_change_nothing(tmp_path, stored):
    cfg, _ = stored
    result = _backtest(cfg, stored_mail.copy_rules(tmp_path))
    assert result.label_flips == [] and result.auto_reply_changes == [] and result.routing_changes == []
    assert result.unchanged == result.total == 7


def test_since_limits_the_period(tmp_path, stored):
    cfg, _ = stored
    candidate = stored_mail.copy_rules(tmp_path)
    (candidate / "wind.toml").write_text(WIND_RULE)
    assert _backtest(cfg, candidate, since=datetime.now(UTC) + timedelta(days=1)).total == 0
    assert _backtest(cfg, candidate, since=datetime.now(UTC) - timedelta(days=1)).total == 7


def test_the_cli_prints_flips_first_and_json_with_counts(tmp_path, stored, capsys):
    cfg, _ = stored
    candidate = stored_mail.copy_rules(tmp_path)
    (candidate / "wind.toml").write_text(WIND_RULE)
    config = str(tmp_path / "config.toml")

    assert stored_mail.run_cli(["--config", config, "backtest", "--rules", str(candidate)]) == 0
    text = capsys.readouterr().out
    assert text.index("label flips: 3 (preparation -> acute: 3)") < text.index("routing changes: 0")
    assert text.index("routing changes") < text.index("auto-reply changes: 3 (would now be answered: 3, no longer: 0)")
    assert "+WIND_FARM_CONFLICT" in text and "unchanged: 4 of 7" in text

    assert (
        stored_mail.run_cli(
            ["--config", config, "backtest", "--rules", str(candidate), "--json", "--since", "2020-01-01"]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["label_flips"] == 3
    assert report["counts"]["label_flips_by_direction"] == {"preparation -> acute": 3}
    assert report["counts"]["auto_reply_gained"] == 3 and report["counts"]["unchanged"] == 4
    assert report["candidate"]["rules_hash"] == load_rules(candidate).hash
    assert report["baseline"]["rules_hash"] == load_rules(cfg.resolve(cfg.paths.rules_dir)).hash
    assert {c["flip"] for c in report["label_flips"]} == {"preparation -> acute"}
    assert report["since"].startswith("2020-01-01T00:00:00")


def test_the_cli_refuses_a_broken_candidate(tmp_path, stored, capsys):
    candidate = stored_mail.copy_rules(tmp_path)
    (candidate / "wind.toml").write_text(WIND_RULE.replace('["windpark*"]', "['(a|aa)+']").replace("words", "regex"))
    code = stored_mail.run_cli(["--config", str(tmp_path / "config.toml"), "backtest", "--rules", str(candidate)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{candidate / 'wind.toml'}:6: rule[0](WIND_FARM_CONFLICT).regex[0]: regular expression can backtrack" in err


def test_a_candidate_routing_shows_routing_changes(tmp_path, stored):
    cfg, ids = stored
    roster_file = tmp_path / "roster.toml"
    roster_file.write_text('[[person]]\nname = "Anna"\naddress = "anna@omo.example"\norganisation = "BZK"\n')
    routing = tmp_path / "routing.toml"
    routing.write_text(
        '[[rule]]\nsymbol = "WIND"\ndescription = "wind"\nwords = ["windpark*"]\n\n'
        '[[topic]]\nname = "energy"\nsignals = ["WIND"]\npersons = ["anna@omo.example"]\n'
    )
    from omo_mailbot.roster import load_roster
    from omo_mailbot.routing import load_routing

    roster = load_roster(roster_file)
    engine, sessions = open_database(cfg)
    live = build_decider(cfg)
    result = run_backtest(sessions, Side(live), Side(live, load_routing(routing, roster), roster))
    engine.dispose()
    changed = {c.message_db_id for c in result.routing_changes}
    # every non-automated mail that mentions a wind farm gets the topic; the out-of-office opens no case
    assert changed == _ids_of(cfg, ids, {"acute_wind", "preparation", "wind_preparation", "wind_question"})
    assert all(
        c.after_topics == ("energy",) and c.after_people == ("anna@omo.example",) for c in result.routing_changes
    )
    assert result.label_flips == []


def test_progress_is_a_bar_on_a_terminal_and_a_line_every_n_mails_otherwise():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = TextProgress(tty, width=10, minimum=0)
    for done in range(1, 21):
        bar(done, 20)
    assert "\r  10/20 [=====     ]" in tty.getvalue() and tty.getvalue().endswith("\r  20/20 [==========]\n")

    plain = io.StringIO()
    lines = TextProgress(plain, every=5, minimum=0)
    for done in range(1, 13):
        lines(done, 12)
    assert plain.getvalue().splitlines() == [
        "  5/12 mails decided again",
        "  10/12 mails decided again",
        "  12/12 mails decided again",
    ]

    quiet = io.StringIO()
    short = TextProgress(quiet)  # short runs print nothing
    short(1, 7)
    assert quiet.getvalue() == ""


@pytest.mark.sqlite_only
def test_a_backtest_reads_beside_the_running_service_and_never_takes_the_sqlite_write_lock(tmp_path, stored, capsys):
    from omo_mailbot import db

    cfg, _ = stored
    candidate = stored_mail.copy_rules(tmp_path)
    (candidate / "wind.toml").write_text(WIND_RULE)
    engine = db.make_engine(cfg.database.url)
    service_batch = engine.connect()
    service_batch.begin()  # BEGIN IMMEDIATE: the service is writing a batch and holds the write lock
    try:
        code = stored_mail.run_cli(["--config", str(tmp_path / "config.toml"), "backtest", "--rules", str(candidate)])
    finally:
        service_batch.rollback()
        service_batch.close()
        engine.dispose()
    assert code == 0  # with a writer session it would have waited 30 s for the lock and failed
    assert "label flips: 3" in capsys.readouterr().out
