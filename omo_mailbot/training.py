"""Fitting the model with scikit-learn, and reading the fitted pipeline out into plain numbers.

This is the only module that imports scikit-learn, and only ``omo-mailbot
train``, ``evaluate`` and the tests load it; the service scores with the
exported numbers (:mod:`omo_mailbot.classifier`).

The pipeline: tf-idf over words (1-2 grams) and characters (2-5 grams inside
word boundaries, which absorbs Dutch compounds and typos), a class-balanced
logistic regression, and sigmoid calibration from cross-validated predictions
(one calibrator over the whole training set, ``ensemble=False``), so that its
output can be read as a probability.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from .classifier import FORMAT, Family, TrainedModel, data_hash
from .errors import ModelError


def build_pipeline(c: float = 10.0) -> Pipeline:
    features = FeatureUnion(
        [
            (
                "words",
                TfidfVectorizer(
                    analyzer="word",
                    ngram_range=(1, 2),
                    min_df=1,
                    sublinear_tf=True,
                    token_pattern=r"(?u)\b\w\w+\b",
                    max_features=40000,
                    dtype=np.float64,
                ),
            ),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(2, 5),
                    min_df=2,
                    sublinear_tf=True,
                    max_features=60000,
                    dtype=np.float64,
                ),
            ),
        ]
    )
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    return Pipeline([("features", features), ("clf", clf)])


def fit(texts: Sequence[str], labels: Sequence[str], *, c: float = 10.0, cv: int = 5) -> CalibratedClassifierCV:
    """The fitted, calibrated scikit-learn pipeline."""
    if len(set(labels)) < 2:
        raise ModelError("training needs examples of both labels (acute and preparation)")
    folds = max(2, min(cv, min(list(labels).count(lab) for lab in set(labels))))
    calibrated = CalibratedClassifierCV(build_pipeline(c), method="sigmoid", cv=folds, ensemble=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        calibrated.fit(list(texts), list(labels))
    return calibrated


def export(estimator: Any, meta: dict[str, Any]) -> TrainedModel:
    """The numbers of a pipeline of :func:`fit`'s shape; anything else is refused rather than approximated."""
    if len(estimator.calibrated_classifiers_) != 1 or sorted(estimator.classes_) != ["acute", "preparation"]:
        raise ModelError("only a binary acute/preparation model with one calibrator can be exported")
    calibrated = estimator.calibrated_classifiers_[0]
    (calibrator,) = calibrated.calibrators
    steps = calibrated.estimator.named_steps
    features, clf = steps["features"], steps["clf"]
    if features.transformer_weights:
        raise ModelError("weighted feature unions cannot be exported")
    # sklearn's binary calibrator gives P(classes_[1]); the coefficients push towards classes_[1]
    sign = 1.0 if list(estimator.classes_).index("acute") == 1 else -1.0
    coef = np.asarray(clf.coef_[0], dtype=np.float64)
    families, offset = [], 0
    for name, vec in features.transformer_list:
        _check_vectorizer(name, vec)
        size = len(vec.vocabulary_)
        terms = sorted(vec.vocabulary_, key=vec.vocabulary_.__getitem__)
        families.append(
            Family(
                name=name,
                analyzer=vec.analyzer,
                ngram=tuple(vec.ngram_range),
                token_pattern=vec.token_pattern or "",
                terms=tuple(terms),
                idf=np.asarray(vec.idf_, dtype=np.float64),
                weights=sign * coef[offset : offset + size],
            )
        )
        offset += size
    if offset != coef.shape[0]:
        raise ModelError("the classifier's coefficients do not match the vocabularies")
    a, b = float(calibrator.a_), float(calibrator.b_)
    # P(acute) = 1 / (1 + exp(sign (a d + b))) with d = sign d', the acute-signed decision: a d' + sign b
    return TrainedModel(tuple(families), sign * float(clf.intercept_[0]), (a, sign * b), meta)


def _check_vectorizer(name: str, vec: Any) -> None:
    """Only the settings the exported scoring reproduces are accepted."""
    plain = (
        isinstance(vec, TfidfVectorizer)
        and vec.analyzer in ("word", "char_wb")
        and vec.lowercase
        and vec.preprocessor is None
        and vec.tokenizer is None
        and vec.strip_accents is None
        and vec.stop_words is None
        and vec.input == "content"
        and vec.sublinear_tf
        and vec.use_idf
        and vec.norm == "l2"
        and not vec.binary
    )
    if not plain:
        raise ModelError(f"feature family {name!r} is set up in a way the exported model cannot reproduce")


def train(
    texts: Sequence[str], labels: Sequence[str], *, c: float = 10.0, cv: int = 5, now: datetime | None = None
) -> TrainedModel:
    meta = {
        "format": FORMAT,
        "sklearn": sklearn.__version__,
        "data_hash": data_hash(texts, labels),
        "n_train": len(texts),
        "n_acute": sum(1 for lab in labels if lab == "acute"),
        "trained_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "c": c,
    }
    return export(fit(texts, labels, c=c, cv=cv), meta)


def out_of_fold_probabilities(
    texts: Sequence[str], labels: Sequence[str], *, folds: int = 5, seed: int = 0, c: float = 10.0
) -> list[float]:
    """P(acute) for every text from a model that never saw it (stratified k-fold)."""
    from sklearn.model_selection import StratifiedKFold

    out = [0.0] * len(texts)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in splitter.split(list(texts), list(labels)):
        model = train([texts[i] for i in train_idx], [labels[i] for i in train_idx], c=c)
        for i, p in zip(test_idx, model.acute_probability([texts[i] for i in test_idx]), strict=True):
            out[int(i)] = p
    return out
