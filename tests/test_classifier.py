"""The learned model: meets the recall target on unseen mail, explains itself, refuses bad files."""

from __future__ import annotations

import collections
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
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


def _saved_with(model: classifier.TrainedModel, path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """``model`` saved to ``path``, then its arrays changed by ``change`` and written back (as a hand or a
    bug might)."""
    classifier.save(model, path)
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    change(arrays)
    np.savez(path, **arrays)
    return path


def test_a_model_file_of_another_format_is_refused(model, tmp_path):
    def older(arrays: dict[str, Any]) -> None:
        arrays["meta_json"] = np.array(json.dumps({**model.meta, "format": 1}))

    path = _saved_with(model, tmp_path / "older.npz", older)
    with pytest.raises(ModelError, match=r"format 1, this version reads 2.*omo-mailbot train"):
        classifier.load(path)


def test_a_model_file_from_the_skops_days_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "omo-classifier.skops"
    with zipfile.ZipFile(path, "w") as z:  # a skops file is a zip of a schema and arrays
        z.writestr("schema.json", '{"__class__": "CalibratedClassifierCV"}')
    with pytest.raises(ModelError, match="omo-mailbot train"):
        classifier.load(path)


def test_a_corrupt_model_file_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 this is not a model")
    with pytest.raises(ModelError, match="omo-mailbot train"):
        classifier.load(path)


def test_a_model_file_holding_pickled_objects_is_refused_without_unpickling(model, tmp_path):
    def pickled(arrays: dict[str, Any]) -> None:
        arrays["intercept"] = np.array([collections.Counter(a=1)], dtype=object)

    with pytest.raises(ModelError, match="omo-mailbot train"):
        classifier.load(_saved_with(model, tmp_path / "evil.npz", pickled))


def test_a_model_file_whose_arrays_disagree_is_refused(model, tmp_path):
    name = model.families[0].name

    def cut(arrays: dict[str, Any]) -> None:
        arrays[f"{name}.idf"] = arrays[f"{name}.idf"][:-1]

    with pytest.raises(ModelError, match="different lengths"):
        classifier.load(_saved_with(model, tmp_path / "cut.npz", cut))


def test_a_missing_model_names_the_train_command(tmp_path):
    with pytest.raises(ModelError, match="omo-mailbot train"):
        classifier.load(tmp_path / "nothing.npz")


def test_a_model_file_damaged_inside_a_compressed_member_is_refused_with_a_hint(model, tmp_path):
    path = tmp_path / "damaged.npz"
    classifier.save(model, path)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(f"{model.families[1].name}.weights.npy")
    data = bytearray(path.read_bytes())
    # the member's compressed bytes start after its local header (30 bytes + name + extra field)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 10, start + 60):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="omo-mailbot train"):
        classifier.load(path)


def test_a_single_array_file_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.arange(3.0))
    with pytest.raises(ModelError, match="omo-mailbot train"):
        classifier.load(path)


def test_weights_in_two_dimensions_are_refused_at_load_not_at_the_first_mail(model, tmp_path):
    name = model.families[0].name

    def square(arrays: dict[str, Any]) -> None:
        arrays[f"{name}.weights"] = np.stack([arrays[f"{name}.weights"]] * 2, axis=1)

    with pytest.raises(ModelError, match="one row of numbers"):
        classifier.load(_saved_with(model, tmp_path / "square.npz", square))
