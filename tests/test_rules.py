"""The rule language: loading names file, rule, key and line; matching is precise."""

from __future__ import annotations

from pathlib import Path

import pytest

from omo_mailbot.errors import ConfigError
from omo_mailbot.rules import MatchContext, load_rules

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def _errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_rules(_write(tmp_path, text))
    return [str(p) for p in err.value.problems]


def _ctx(body: str, subject: str = "", headers: tuple[tuple[str, str], ...] = (), domain: str = "x.nl") -> MatchContext:
    return MatchContext(subject, body, "", headers, domain)


RULE = '[[rule]]\nsymbol = "{sym}"\ndescription = "d"\nweight = {w}\n{extra}\n'


def test_the_shipped_rules_load():
    rules = load_rules(ROOT / "rules")
    assert len(rules.rules) >= 8 and len(rules.hash) == 64


def test_a_regex_that_does_not_compile_names_file_line_rule_and_key(tmp_path):
    (err,) = _errors(tmp_path, RULE.format(sym="BAD_RX", w=1, extra='regex = ["(unclosed"]'))
    assert err.startswith(f"{tmp_path / 'r.toml'}:5: rule[0](BAD_RX).regex[0]: regular expression does not compile")


def test_a_catastrophic_regex_is_refused(tmp_path):
    (err,) = _errors(tmp_path, RULE.format(sym="SLOW", w=1, extra='regex = ["(a+)+b"]'))
    assert "rule[0](SLOW).regex[0]" in err and "backtrack" in err


def test_unknown_keys_wrong_types_and_ranges_are_all_reported_at_once(tmp_path):
    text = RULE.format(sym="ONE", w='"zwaar"', extra='words = ["x"]\ncolour = "red"') + RULE.format(
        sym="two", w=99, extra='words = ["y"]\nforce = "maybe"'
    )
    errors = "\n".join(_errors(tmp_path, text))
    assert "r.toml:4: rule[0](ONE).weight: expected a number" in errors
    assert "r.toml:6: rule[0](ONE).colour: unknown key" in errors
    assert "rule[1](two).symbol: expected an UPPER_SNAKE name" in errors
    assert "rule[1](two).weight: must be between -50 and 50, got 99" in errors
    assert 'rule[1](two).force: expected "acute" or "preparation"' in errors


def test_duplicate_symbols_across_files_are_refused(tmp_path):
    _write(tmp_path, RULE.format(sym="SAME", w=1, extra='words = ["a"]'), "a.toml")
    _write(tmp_path, RULE.format(sym="SAME", w=1, extra='words = ["b"]'), "b.toml")
    with pytest.raises(ConfigError) as err:
        load_rules(tmp_path)
    (problem,) = err.value.problems
    assert problem.file.endswith("b.toml") and problem.line == 2 and "duplicate symbol" in problem.message
    assert "a.toml:1" in problem.message


def test_requires_must_name_known_symbols(tmp_path):
    (err,) = _errors(tmp_path, RULE.format(sym="COMBO", w=1, extra='requires = ["NOPE"]'))
    assert "rule(COMBO).requires: unknown symbol NOPE" in err


def test_a_rule_without_matchers_is_an_error(tmp_path):
    (err,) = _errors(tmp_path, RULE.format(sym="EMPTY", w=1, extra=""))
    assert "has no matcher" in err


def test_a_toml_syntax_error_names_its_line(tmp_path):
    (err,) = _errors(tmp_path, '[[rule]]\nsymbol = "X"\nweight = \n')
    assert ":3:" in err and "TOML syntax error" in err


def test_words_match_whole_words_with_dutch_endings(tmp_path):
    rules = load_rules(_write(tmp_path, RULE.format(sym="DEMO", w=2, extra='words = ["demonstratie", "bedreig*"]')))
    assert [h.matched for h in rules.evaluate(_ctx("twee demonstraties vandaag"))] == [("demonstraties",)]
    assert rules.evaluate(_ctx("hij werd bedreigd"))[0].matched == ("bedreigd",)
    assert rules.evaluate(_ctx("de demonstratieve houding")) == []  # no match inside a longer word


def test_phrases_tolerate_line_breaks_and_case(tmp_path):
    rules = load_rules(_write(tmp_path, RULE.format(sym="TOWNHALL", w=2, extra='phrases = ["voor het gemeentehuis"]')))
    assert rules.evaluate(_ctx("Ze staan Voor het\nGemeentehuis."))


def test_header_and_sender_domain_matchers(tmp_path):
    extra = 'headers = { "x-priority" = "^1" }\nsender_domains = ["politie.nl"]'
    rules = load_rules(_write(tmp_path, RULE.format(sym="PRIO", w=1, extra=extra)))
    assert rules.evaluate(_ctx("", headers=(("x-priority", "1 (Highest)"),)))
    assert rules.evaluate(_ctx("", domain="regio.politie.nl"))
    assert not rules.evaluate(_ctx("", domain="nietpolitie.nl"))


def test_a_composite_fires_only_when_all_its_parts_fire(tmp_path):
    text = (
        RULE.format(sym="NOW", w=1, extra='words = ["nu"]')
        + RULE.format(sym="CROWD", w=1, extra='words = ["menigte"]')
        + RULE.format(sym="CROWD_NOW", w=3, extra='requires = ["NOW", "CROWD"]')
    )
    rules = load_rules(_write(tmp_path, text))
    assert [h.symbol for h in rules.evaluate(_ctx("er is nu een menigte"))] == ["NOW", "CROWD", "CROWD_NOW"]
    assert [h.symbol for h in rules.evaluate(_ctx("er was een menigte"))] == ["CROWD"]


def test_scope_keeps_quoted_history_out_unless_asked(tmp_path):
    text = RULE.format(sym="RIOT", w=3, extra='words = ["rellen"]') + RULE.format(
        sym="RIOT_ANYWHERE", w=1, extra='words = ["rellen"]\nscope = "all"'
    )
    rules = load_rules(_write(tmp_path, text))
    ctx = MatchContext("Re: evaluatie", "Dank voor alles.", "> er zijn nu rellen", (), "x.nl")
    assert [h.symbol for h in rules.evaluate(ctx)] == ["RIOT_ANYWHERE"]


def test_the_hash_changes_with_the_content(tmp_path):
    first = load_rules(_write(tmp_path, RULE.format(sym="A", w=1, extra='words = ["a"]'))).hash
    second = load_rules(_write(tmp_path, RULE.format(sym="A", w=2, extra='words = ["a"]'))).hash
    assert first != second
