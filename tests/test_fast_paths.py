"""The hot-path shortcuts found by profiling (BENCHMARKS.md) give exactly what the plain code gives."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from omo_mailbot import classifier
from omo_mailbot.config import default_config
from omo_mailbot.corpus import examples
from omo_mailbot.mail import parse
from omo_mailbot.rules import load_rules, phrase_pattern, word_pattern
from omo_mailbot.service import training_set
from omo_mailbot.text import new_text

from .conftest import ROOT


def _seed_texts() -> list[str]:
    out = []
    for ex in examples(ROOT / "corpus" / "seed"):
        mail = parse(ex.path.read_bytes())
        out.append(f"{mail.subject}\n{new_text(mail).new}\n{new_text(mail).quoted}")
    return out


def test_rules_dispatched_on_the_first_letter_match_what_a_plain_alternation_matches():
    rules = load_rules(ROOT / "rules")
    plain: dict[str, re.Pattern[str]] = {}
    for path in sorted((ROOT / "rules").glob("*.toml")):
        for table in tomllib.loads(path.read_text()).get("rule", []):
            alternatives = [word_pattern(w, table.get("inflect", True)) for w in table.get("words", [])]
            alternatives += [phrase_pattern(p) for p in table.get("phrases", [])]
            alternatives += [f"(?:{rx})" for rx in table.get("regex", [])]
            if alternatives:
                plain[table["symbol"]] = re.compile("|".join(alternatives), re.IGNORECASE)
    texts = [*_seed_texts(), "Demonstranten! Vanavond, MORGEN, 's avonds; -bedreigd- @burgemeester", ""]
    checked = 0
    for rule in rules.rules:
        if rule.pattern is None:
            continue
        for text in texts:
            fast = [m.group(0) for m in rule.pattern.finditer(text)]
            assert fast == [m.group(0) for m in plain[rule.symbol].finditer(text)], rule.symbol
            checked += len(fast)
    assert checked > 100  # the corpus does exercise the rules


def test_the_direct_probability_equals_sklearns_predict_proba(model_file: Path):
    model = classifier.load(model_file)
    texts, _ = training_set(default_config(str(ROOT)), include_test=True)
    texts += ["", "   ", "qqq zzz", "DEMONSTRATIE NU " * 200]
    proba = model.estimator.predict_proba(texts)
    col = list(model.estimator.classes_).index("acute")
    one_by_one = [model.acute_probability([t])[0] for t in texts]
    assert max(abs(a - float(b)) for a, b in zip(one_by_one, proba[:, col], strict=True)) < 1e-9
    assert model.acute_probability(texts) == one_by_one
