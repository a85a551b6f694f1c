"""The learned model: meets the recall target on unseen mail, explains itself, refuses bad files."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from omo_mailbot import classifier, corpus
from omo_mailbot.config import default_config
from omo_mailbot.errors import ModelError
from omo_mailbot.mail import parse
from omo_mailbot.service import build_decider

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model(model_file: Path) -> classifier.TrainedModel:
    return classifier.load(model_file)


def test_the_whole_decision_meets_the_recall_target_on_the_test_split(model):
    cfg = default_config(str(ROOT))
    decider = build_decider(cfg, model=model)
    test = [ex for ex in corpus.examples(ROOT / "corpus" / "seed") if ex.split == "test"]
    assert len(test) >= 80
    labels = [ex.label for ex in test]
    judged = [decider.decide(parse(ex.path.read_bytes())).label for ex in test]
    acute = [j for lab, j in zip(labels, judged, strict=True) if lab == "acute"]
    recall = sum(j == "acute" for j in acute) / len(acute)
    accuracy = sum(lab == j for lab, j in zip(labels, judged, strict=True)) / len(labels)
    assert recall >= 0.97, f"acute recall {recall:.3f} on the test split"
    assert accuracy >= 0.90, f"accuracy {accuracy:.3f} on the test split"


def test_training_never_sees_the_test_split():
    cfg = default_config(str(ROOT))
    from omo_mailbot.service import training_set

    texts, _ = training_set(cfg)
    test = [ex for ex in corpus.examples(ROOT / "corpus" / "seed") if ex.split == "test"]
    assert len(texts) == len(corpus.examples(ROOT / "corpus" / "seed")) - len(test)


def test_the_seed_corpus_is_big_varied_and_about_15_percent_english():
    examples = corpus.examples(ROOT / "corpus" / "seed")
    assert len(examples) >= 400
    english = sum(ex.lang == "en" for ex in examples) / len(examples)
    assert 0.10 <= english <= 0.25
    assert sum(ex.kind.startswith("hard") for ex in examples) >= 100


def test_probabilities_are_calibrated_not_certain_on_unseen_text(model):
    (p,) = model.acute_probability([classifier.model_text("vraag", "kunt u mij bellen over de planning?")])
    assert 0.0 < p < 1.0


def test_top_terms_say_what_pushed_the_model(model):
    text = classifier.model_text("spoed", "er zijn vanavond rellen bij het gemeentehuis, bel mij vandaag")
    terms = dict(model.top_terms(text, k=30))
    assert terms, "no explanation"
    assert any(w > 0 for w in terms.values())


def test_a_model_from_another_scikit_learn_version_is_refused(model, tmp_path):
    odd = classifier.TrainedModel(model.estimator, {**model.meta, "sklearn": "0.0.1"})
    path = tmp_path / "old.skops"
    classifier.save(odd, path)
    with pytest.raises(ModelError, match=r"scikit-learn 0\.0\.1.*omo-mailbot train"):
        classifier.load(path)


def test_a_corrupt_model_file_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "broken.skops"
    path.write_bytes(b"PK\x03\x04 this is not a model")
    with pytest.raises(ModelError, match="omo-mailbot train"):
        classifier.load(path)


def test_a_model_file_with_untrusted_types_is_refused(model, tmp_path):
    import skops.io as sio

    path = tmp_path / "evil.skops"
    sio.dump(
        {
            "estimator": model.estimator,
            "vocab": {},
            "meta_json": json.dumps(model.meta | {"_names": None}),
            "extra": collections.Counter(a=1),
        },
        path,
    )
    with pytest.raises(ModelError, match="does not trust"):
        classifier.load(path)


def test_a_missing_model_names_the_train_command(tmp_path):
    with pytest.raises(ModelError, match="omo-mailbot train"):
        classifier.load(tmp_path / "nothing.skops")
