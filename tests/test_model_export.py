"""The model the service runs is scikit-learn's fitted pipeline read out into numbers: same probabilities,
no scikit-learn in the service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from omo_mailbot import classifier, training
from omo_mailbot.config import default_config
from omo_mailbot.corpus import iter_eml
from omo_mailbot.errors import ModelError, ParseError
from omo_mailbot.mail import parse
from omo_mailbot.service import training_set
from omo_mailbot.text import new_text

from .conftest import IN_CI, ROOT, SHARED

ODD_TEXTS = [
    "",
    "   ",
    "a",
    "qqq zzz",
    "demonstratie nu " * 200,
    "x\u2028y  z\t\tw\n\n\nv",
    "İstanbul ǅ ß straße ﬁnale",
    "https://example.invalid/" + "a" * 300,
    "12 34 5678 06-29401416",
]


@pytest.fixture(scope="module")
def fitted() -> tuple[CalibratedClassifierCV, classifier.TrainedModel]:
    texts, labels = training_set(default_config(str(ROOT)))
    estimator = training.fit(texts, labels)
    return estimator, training.export(estimator, {"format": classifier.FORMAT})


def _mail_texts(folder: Path) -> list[str]:
    out = []
    for path in (p for p in iter_eml([folder]) if p.suffix == ".eml"):
        mail = parse(path.read_bytes())
        out.append(classifier.model_text(mail.subject, new_text(mail).new))
    return out


def _sklearn_acute(estimator: Any, texts: list[str]) -> list[float]:
    column = list(estimator.classes_).index("acute")
    return [float(p) for p in estimator.predict_proba(texts)[:, column]]


def _largest_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_the_exported_model_gives_sklearns_probabilities_on_the_seed_corpus_and_holdout(fitted):
    estimator, model = fitted
    texts, _ = training_set(default_config(str(ROOT)), include_test=True)
    texts += _mail_texts(ROOT / "corpus" / "holdout") + ODD_TEXTS
    assert len(texts) > 450
    assert _largest_difference(model.acute_probability(texts), _sklearn_acute(estimator, texts)) < 1e-9


def test_the_exported_model_gives_sklearns_probabilities_on_the_robustness_corpus(fitted):
    corpus = SHARED / "corpora" / "mail"
    if not corpus.is_dir():
        if IN_CI:
            pytest.fail(f"{corpus} is missing; CI needs the shared mail corpus")
        pytest.skip(f"{corpus} is not here")
    estimator, model = fitted
    texts = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix != ".md"):
        try:
            mail = parse(path.read_bytes())
        except ParseError:  # stored as an error case by the service; nothing to score
            continue
        texts.append(classifier.model_text(mail.subject, new_text(mail).new))
    assert len(texts) > 400
    assert _largest_difference(model.acute_probability(texts), _sklearn_acute(estimator, texts)) < 1e-9


def test_probabilities_do_not_depend_on_what_was_scored_before(fitted):
    _, model = fitted
    texts = ODD_TEXTS + ["er zijn vanavond rellen bij het gemeentehuis"] * 3
    first = model.acute_probability(texts)
    fresh = classifier.TrainedModel(model.families, model.intercept, model.calibration, model.meta)
    assert [fresh.acute_probability([t])[0] for t in reversed(texts)] == list(reversed(first))


def test_saving_and_loading_keeps_every_number(fitted, tmp_path):
    _, model = fitted
    path = tmp_path / "model.npz"
    classifier.save(model, path)
    loaded = classifier.load(path)
    texts = [*ODD_TEXTS, "spoed: er zijn vanavond rellen bij het gemeentehuis, bel mij vandaag"]
    assert loaded.acute_probability(texts) == model.acute_probability(texts)
    assert loaded.top_terms(texts[-1], k=20) == model.top_terms(texts[-1], k=20)
    assert loaded.meta["format"] == classifier.FORMAT
    assert not list(tmp_path.glob("*.tmp"))


def test_top_terms_agree_with_the_pipelines_own_features(fitted):
    estimator, model = fitted
    text = classifier.model_text("spoed", "er zijn vanavond rellen bij het gemeentehuis, bel mij vandaag")
    pipe = estimator.calibrated_classifiers_[0].estimator
    row = pipe.named_steps["features"].transform([text]).tocsr()
    coef = pipe.named_steps["clf"].coef_[0]
    sign = 1.0 if list(estimator.classes_).index("acute") == 1 else -1.0
    names = [str(n).replace("words__", "").replace("chars__", "~") for n in pipe[0].get_feature_names_out()]
    expected = {names[j]: round(float(sign * v * coef[j]), 4) for j, v in zip(row.indices, row.data, strict=True)}
    assert dict(model.top_terms(text, k=len(expected))) == expected


def test_a_pipeline_set_up_otherwise_is_refused_rather_than_approximated():
    texts, labels = training_set(default_config(str(ROOT)))
    estimator = training.fit(texts[:80], labels[:80])
    estimator.calibrated_classifiers_[0].estimator.named_steps["features"].transformer_list[0][1].binary = True
    with pytest.raises(ModelError, match="cannot reproduce"):
        training.export(estimator, {})


def test_the_running_service_never_imports_scikit_learn_or_scipy(model_file, tmp_path):
    script = f"""
import sys
from pathlib import Path
from omo_mailbot import cli, service
from omo_mailbot.classifier import load
from omo_mailbot.config import default_config
from omo_mailbot.mail import parse
decider = service.build_decider(default_config({str(ROOT)!r}), model=load(Path({str(model_file)!r})))
mail = parse(b"Subject: spoed\\r\\nFrom: a@example.org\\r\\n\\r\\nEr zijn vanavond rellen, bel mij.\\r\\n")
print(decider.decide(mail).label)
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"sklearn", "scipy", "skops", "joblib"}})
print(",".join(heavy) or "none")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    label, heavy = out.stdout.split()
    assert label in ("acute", "preparation")
    assert heavy == "none"


def test_families_set_up_otherwise_than_training_does_still_count_as_scikit_learn_does():
    """The scoring counts all families in one pass and remembers each word's tokens and n-grams; that
    must hold for any family a model file may hold, not only the two training makes: longer word
    n-grams, other token patterns (tokens that hold punctuation, or spaces: not word-local), and
    several families of one kind. Each family's tf-idf row times its weights must match scikit-learn's."""
    texts, _ = training_set(default_config(str(ROOT)))
    setups = {
        "trigrams": {"analyzer": "word", "ngram_range": (1, 3)},
        "bigrams_only": {"analyzer": "word", "ngram_range": (2, 2)},
        "nonspace": {"analyzer": "word", "ngram_range": (1, 2), "token_pattern": r"\S+"},
        "phrases": {"analyzer": "word", "ngram_range": (1, 2), "token_pattern": r"[^.,;:!?\n]+"},
        "chars": {"analyzer": "char_wb", "ngram_range": (1, 3)},
        "long_chars": {"analyzer": "char_wb", "ngram_range": (4, 6)},
    }
    rng = np.random.default_rng(7)
    vectorizers, families = [], []
    for name, setup in setups.items():
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float64, **setup).fit(texts)
        terms = sorted(vec.vocabulary_, key=vec.vocabulary_.__getitem__)
        weights = rng.normal(size=len(terms))
        lo, hi = setup["ngram_range"]
        families.append(
            classifier.Family(name, setup["analyzer"], (lo, hi), vec.token_pattern, tuple(terms), vec.idf_, weights)
        )
        vectorizers.append(vec)
    model = classifier.TrainedModel(tuple(families), 0.25, (-1.0, 0.0))
    sample = texts[::5] + ODD_TEXTS + ["Dit, dat; en... DAT! spoed-overleg: a.s. 12:00 (zaal 3).  dit dat en"]
    for text in sample:
        rows = (vec.transform([text]) @ f.weights for vec, f in zip(vectorizers, families, strict=True))
        expected = 0.25 + sum(float(row[0]) for row in rows)
        assert model.decision(text) == pytest.approx(expected, abs=1e-12, rel=1e-12)
    for family, (name, setup) in zip(families, setups.items(), strict=True):
        counts = CountVectorizer(vocabulary=family.terms, **setup)
        count = family.counter()
        for text in sample:
            row = counts.transform([text]).tocsr()
            row.sort_indices()
            ids, tf = count(text)
            assert (ids.tolist(), tf.tolist()) == (row.indices.tolist(), row.data.tolist()), name


def test_weights_that_are_not_numbers_are_refused(fitted):
    _, model = fitted
    family = model.families[0]
    broken = np.array(family.weights)
    broken[3] = np.nan
    with pytest.raises(ModelError, match="not finite"):
        classifier.Family(
            family.name, family.analyzer, family.ngram, family.token_pattern, family.terms, family.idf, broken
        )
