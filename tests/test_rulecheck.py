"""`rules check`: every kind of mistake in rules, roster and routing, each with its file, line and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from omo_mailbot.regexrisk import risk
from omo_mailbot.rulecheck import check_operator_files, check_rules_dir

from . import stored_mail

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
[[rule]]
symbol = "CROWD"
description = "A crowd gathers"
weight = 2.0
words = ["menigte"]
"""


def rule(symbol: str, extra: str = 'words = ["x"]', weight: str = "1.0") -> str:
    return f'[[rule]]\nsymbol = "{symbol}"\ndescription = "d"\nweight = {weight}\n{extra}\n\n'


def line_of(text: str, marker: str) -> int:
    """The 1-based line of the first line containing ``marker``."""
    return next(i for i, line in enumerate(text.splitlines(), start=1) if marker in line)


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def problems(directory: Path, **kw: float) -> list[str]:
    return [str(p) for p in check_rules_dir(directory, **kw).problems]


def run_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str]:
    # no config file: built-in defaults; roster and routing only when passed (missing files = no roster)
    code = stored_mail.run_cli(["--config", str(tmp_path / "absent.toml"), "rules", "check", *args])
    return code, capsys.readouterr().out


# --- each class of error, with its file and line ------------------------------------


def test_a_toml_syntax_error_names_file_and_line(tmp_path):
    text = GOOD + '\n[[rule]]\nsymbol = "BROKEN\n'
    path = write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    assert err.startswith(f"{path}:{line_of(text, 'BROKEN')}: TOML syntax error")


def test_an_unknown_key_names_its_line(tmp_path):
    text = GOOD + rule("SECOND", 'words = ["y"]\nwieght = 3')
    path = write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    assert err.startswith(f"{path}:{line_of(text, 'wieght')}: rule[1](SECOND).wieght: unknown key")


def test_an_unknown_top_level_table_is_reported_not_skipped(tmp_path):
    text = GOOD + '\n[[rules]]\nsymbol = "TYPO"\n'
    path = write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    assert (
        err
        == f"{path}:{line_of(text, '[[rules]]')}: rules: unknown top-level key: a rules file holds only [[rule]] tables"
    )


def test_a_rules_file_without_rules_is_reported(tmp_path):
    write(tmp_path / "rules", "a.toml", GOOD)
    empty = write(tmp_path / "rules", "b.toml", "# nothing yet\n")
    assert problems(tmp_path / "rules") == [f"{empty}: holds no [[rule]] tables"]


@pytest.mark.parametrize(
    ("extra", "marker", "message"),
    [
        ('weight = "high"', "high", "weight: expected a number"),
        ('phrases = "menigte"', "phrases", "phrases: expected an array of strings"),
        ('scope = "everything"', "scope", "scope: expected one of text, subject, body, all"),
        ("inflect = 1", "inflect", "inflect: expected true or false"),
        ('force = "maybe"', "force", 'force: expected "acute" or "preparation"'),
        ('headers = { "x-priority" = 1 }', "headers", "headers.x-priority: expected a regex string"),
    ],
)
def test_a_wrong_type_names_its_line_and_key(tmp_path, extra, marker, message):
    text = GOOD + f'[[rule]]\nsymbol = "TYPED"\ndescription = "d"\nwords = ["x"]\n{extra}\n'
    path = write(tmp_path / "rules", "a.toml", text)
    errors = problems(tmp_path / "rules")
    expected = f"{path}:{line_of(text, marker)}: rule[1](TYPED).{message}"
    assert any(e.startswith(expected) for e in errors), errors


def test_a_weight_out_of_range_names_its_line(tmp_path):
    text = GOOD + rule("HEAVY", weight="75")
    path = write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    assert err == f"{path}:{line_of(text, '75')}: rule[1](HEAVY).weight: must be between -50 and 50, got 75"


def test_a_regex_that_does_not_compile_names_its_line(tmp_path):
    text = GOOD + rule("BAD_RX", "regex = ['nu\\s+(al']")
    path = write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    assert err.startswith(
        f"{path}:{line_of(text, 'regex')}: rule[1](BAD_RX).regex[0]: regular expression does not compile"
    )


@pytest.mark.parametrize("pattern", ["(a+)+b", "(a|aa)+", "(\\w+\\s?)+$", "(.*)*", "([a-z]+-?)+x", "(a|b|ab)*c"])
def test_a_regex_that_can_backtrack_catastrophically_is_refused_with_its_line(tmp_path, pattern):
    text = GOOD + rule("SLOW", f"regex = ['{pattern}']")
    path = write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    assert err.startswith(f"{path}:{line_of(text, 'regex')}: rule[1](SLOW).regex[0]: regular expression can backtrack")


def test_a_catastrophic_header_regex_is_refused_too(tmp_path):
    text = GOOD + rule("SLOW_HEADER", "headers = { subject = '(x+x+)+y' }")
    path = write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    assert err.startswith(f"{path}:{line_of(text, 'headers')}: rule[1](SLOW_HEADER).headers.subject: regular")


@pytest.mark.parametrize(
    "pattern",
    [
        "\\bnu\\s+(?:al\\s+)?\\d+\\s+mensen",
        "(\\s+\\w+)+",
        "(\\d+\\.)+\\d+",
        "(ab|c)+",
        "(a|ab)+",
        "(\\d{1,3}\\.){3}\\d{1,3}",
        "(a++)+",
        "(?>a+)+",
        "[a-z]{2,5}\\d",
    ],
)
def test_safe_regexes_are_not_refused(pattern):
    assert risk(pattern) is None


def test_a_duplicate_symbol_across_files_names_both_places(tmp_path):
    first = write(tmp_path / "rules", "a.toml", GOOD)
    text = rule("OTHER") + GOOD
    second = write(tmp_path / "rules", "b.toml", text)
    (err,) = problems(tmp_path / "rules")
    assert err == (
        f"{second}:{line_of(text, 'CROWD')}: rule[1](CROWD).symbol: duplicate symbol; already defined at {first}:1"
    )


def test_a_duplicate_symbol_is_found_even_when_the_first_definition_is_broken(tmp_path):
    text = rule("CROWD", 'words = ["x"]\ncolour = "red"') + GOOD
    path = write(tmp_path / "rules", "a.toml", text)
    errors = problems(tmp_path / "rules")
    assert f"{path}:6: rule[0](CROWD).colour: unknown key" in "\n".join(errors)
    second = text.splitlines().index('symbol = "CROWD"', 2) + 1
    assert any(e.startswith(f"{path}:{second}: rule[1](CROWD).symbol: duplicate symbol") for e in errors), errors


def test_requires_naming_an_unknown_symbol_names_the_composite(tmp_path):
    text = GOOD + rule("CROWD_NOW", 'requires = ["CROWD", "HAPENING_NOW"]')
    path = write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    line = line_of(text, "HAPENING_NOW")
    assert err == f"{path}:{line}: rule[1](CROWD_NOW).requires[1]: unknown symbol HAPENING_NOW"


def test_a_composite_of_a_broken_rule_reports_only_the_broken_rule(tmp_path):
    text = rule("BROKEN", "regex = ['(']") + rule("USES_BROKEN", 'requires = ["BROKEN"]')
    write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    assert "rule[0](BROKEN).regex[0]: regular expression does not compile" in err


def test_a_requires_cycle_is_reported(tmp_path):
    text = GOOD + rule("PING", 'requires = ["PONG", "CROWD"]') + rule("PONG", 'requires = ["PING"]')
    path = write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    line = line_of(text, '"PONG", "CROWD"')
    assert err.startswith(f"{path}:{line}: rule[1](PING).requires: requires form a cycle")
    assert "PING -> PONG -> PING" in err


def test_the_model_symbol_is_reserved(tmp_path):
    text = GOOD + rule("MODEL_ACUTE")
    path = write(tmp_path / "rules", "a.toml", text)
    (err,) = problems(tmp_path / "rules")
    assert err.startswith(f"{path}:{line_of(text, 'MODEL_ACUTE')}: rule[1](MODEL_ACUTE).symbol: MODEL_ACUTE is")


def test_a_threshold_no_mail_can_reach_is_reported(tmp_path):
    write(tmp_path / "rules", "a.toml", GOOD)  # 2.0 at most, plus the model's 1.0
    (err,) = problems(tmp_path / "rules", threshold=5.0, model_weight=1.0)
    assert "decision.acute_threshold: no mail can reach the threshold 5" in err
    assert problems(tmp_path / "rules", threshold=2.5, model_weight=1.0) == []


def test_a_missing_rules_directory_is_a_problem(tmp_path):
    assert problems(tmp_path / "nope") == [f"{tmp_path / 'nope'}: rules directory not found"]


# --- roster and routing: their loaders' problems join the list ------------------------

ROSTER = """\
[[person]]
name = "Anna"
address = "anna@omo.example"
organisation = "BZK"
topics = ["energy"]
"""
ROUTING = """\
[[rule]]
symbol = "WIND"
description = "wind"
words = ["windpark"]

[[topic]]
name = "energy"
signals = ["WIND"]
persons = ["anna@omo.example"]
"""


def test_roster_and_routing_mistakes_are_reported_with_the_rules_ones(tmp_path):
    rules_text = GOOD + rule("HEAVY", weight="75")
    rules_path = write(tmp_path / "rules", "a.toml", rules_text)
    roster_text = ROSTER.replace('"BZK"', '"BZ"')
    roster = write(tmp_path / "roster", "roster.toml", roster_text)
    routing = write(tmp_path / "roster", "routing.toml", ROUTING)
    files, report = check_operator_files(tmp_path / "rules", roster, routing)
    assert files is None
    errors = [str(p) for p in report.problems]
    assert f"{rules_path}:{line_of(rules_text, '75')}: rule[1](HEAVY).weight: must be between" in errors[0]
    assert any(
        e.startswith(f"{roster}:{line_of(roster_text, 'BZ')}: person[0].organisation: expected one of") for e in errors
    )


def test_routing_naming_an_unknown_person_or_signal_is_reported(tmp_path):
    write(tmp_path / "rules", "a.toml", GOOD)
    roster = write(tmp_path / "roster", "roster.toml", ROSTER)
    routing_text = ROUTING.replace('signals = ["WIND"]', 'signals = ["WINDY"]').replace("anna@", "bert@")
    routing = write(tmp_path / "roster", "routing.toml", routing_text)
    _, report = check_operator_files(tmp_path / "rules", roster, routing)
    errors = [str(p) for p in report.problems]
    assert f"{routing}:{line_of(routing_text, 'WINDY')}: topic[0].signals[0]: unknown signal WINDY" in "\n".join(errors)
    assert any(e.startswith(f"{routing}:{line_of(routing_text, 'bert@')}: topic[0].persons[0]") for e in errors)


def test_a_roster_person_with_an_unknown_topic_is_reported(tmp_path):
    write(tmp_path / "rules", "a.toml", GOOD)
    roster_text = ROSTER.replace('["energy"]', '["enrgy"]')
    roster = write(tmp_path / "roster", "roster.toml", roster_text)
    routing = write(tmp_path / "roster", "routing.toml", ROUTING)
    _, report = check_operator_files(tmp_path / "rules", roster, routing)
    (err,) = [str(p) for p in report.problems]
    assert err == f"{roster}:{line_of(roster_text, 'enrgy')}: person(anna@omo.example).topics: unknown topic 'enrgy'"


def test_the_shipped_rules_roster_and_routing_pass():
    files, report = check_operator_files(
        ROOT / "rules",
        ROOT / "roster" / "roster.toml",
        ROOT / "roster" / "routing.toml",
        threshold=5.0,
        model_weight=8.0,
    )
    assert report.problems == [] and files is not None
    assert files.roster is not None and files.routing is not None


# --- the command line -----------------------------------------------------------------


def test_the_cli_reports_every_problem_at_once_and_exits_1(tmp_path, capsys):
    text = GOOD + rule("HEAVY", weight="75") + rule("SLOW", "regex = ['(a|aa)+']") + rule("X", 'requires = ["NONE"]')
    path = write(tmp_path / "rules", "a.toml", text)
    roster = write(tmp_path / "roster", "roster.toml", ROSTER.replace("anna@omo.example", "anna-at-omo"))
    code, out = run_cli(capsys, tmp_path, str(tmp_path / "rules"), "--roster", str(roster))
    lines = out.splitlines()
    assert code == 1
    assert f"{path}:{line_of(text, '75')}: rule[1](HEAVY).weight: must be between -50 and 50, got 75" in lines
    assert any(line.startswith(f"{path}:{line_of(text, '(a|aa)+')}: rule[2](SLOW).regex[0]: ") for line in lines)
    assert f"{path}:{line_of(text, 'NONE')}: rule[3](X).requires[0]: unknown symbol NONE" in lines
    assert any(line.startswith(f"{roster}:3: person[0].address: not a valid e-mail address") for line in lines)
    assert lines[-1] == "4 problem(s) in 2 file(s); nothing was changed"


def test_the_cli_passes_valid_files_with_their_hash(tmp_path, capsys):
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    roster = write(tmp_path / "roster", "roster.toml", ROSTER)
    routing = write(tmp_path / "roster", "routing.toml", ROUTING)
    code, out = run_cli(capsys, tmp_path, str(tmp_path / "rules"), "--roster", str(roster), "--routing", str(routing))
    from omo_mailbot.rules import load_rules

    assert code == 0
    assert f"rules valid, hash {load_rules(tmp_path / 'rules').hash[:12]}" in out
    assert "1 persons" in out and "1 topics valid" in out


def test_the_cli_reports_a_syntax_error_and_exits_1(tmp_path, capsys):
    path = write(tmp_path / "rules", "a.toml", "x = [\n")
    code, out = run_cli(capsys, tmp_path, str(tmp_path / "rules"))
    assert code == 1
    assert out.startswith(f"{path}:") and "TOML syntax error" in out
