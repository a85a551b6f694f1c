"""The learned model: one more weighted symbol next to the rules.

This is the only module that imports scikit-learn and skops. The pipeline is
tf-idf over words (1-2 grams) and characters (2-5 grams inside word
boundaries, which absorbs Dutch compounds and typos), a class-balanced
logistic regression, and sigmoid calibration from cross-validated predictions,
so its probability can be read as one. It sees only the subject and the new
text of a mail, capped in length, which keeps it fast and keeps quoted history
from deciding.

Model files are written with skops (no pickle) together with the scikit-learn
version and a hash of the training data; loading refuses any other version,
unknown types or a corrupt file with a message that names ``omo-mailbot train``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from .errors import ModelError

MAX_CHARS = 1500
FORMAT = 1
TRUSTED_TYPES = [
    "builtins.dict",
    "builtins.list",
    "builtins.str",
    "numpy.dtype",
    "numpy.float64",
    "numpy.int64",
    "numpy.ndarray",
    "scipy.sparse._csr.csr_matrix",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.pipeline.FeatureUnion",
    "sklearn.pipeline.Pipeline",
]


def model_text(subject: str, new_text: str) -> str:
    """What the model reads: the subject and the new text, capped."""
    return f"{subject}\n{new_text}"[:MAX_CHARS].lower()


def data_hash(texts: Sequence[str], labels: Sequence[str]) -> str:
    h = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        h.update(label.encode() + b"\0" + text.encode("utf-8", "replace") + b"\0")
    return h.hexdigest()


def build_pipeline(c: float = 4.0) -> Pipeline:
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


@dataclass
class TrainedModel:
    """A calibrated pipeline and what it was trained on."""

    estimator: Any
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return f"sk{self.meta.get('sklearn')}-{str(self.meta.get('data_hash', ''))[:12]}"

    def acute_probability(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        classes = list(self.estimator.classes_)
        proba = self.estimator.predict_proba(list(texts))
        col = classes.index("acute")
        return [float(p) for p in proba[:, col]]

    def top_terms(self, text: str, k: int = 8) -> list[tuple[str, float]]:
        """Terms that pushed this text most towards (positive) or away from acute (negative)."""
        pipe = self.estimator.calibrated_classifiers_[0].estimator
        features, clf = pipe.named_steps["features"], pipe.named_steps["clf"]
        row = features.transform([text]).tocsr()
        coef = clf.coef_[0]
        sign = 1.0 if list(clf.classes_).index("acute") == 1 else -1.0
        names = self._feature_names(features)
        contributions = [(names[j], float(sign * v * coef[j])) for j, v in zip(row.indices, row.data, strict=True)]
        contributions.sort(key=lambda t: abs(t[1]), reverse=True)
        return [(n, round(c, 4)) for n, c in contributions[:k]]

    def _feature_names(self, features: Any) -> list[str]:
        cached = self.meta.get("_names")
        if cached is None:
            cached = [str(n).replace("words__", "").replace("chars__", "~") for n in features.get_feature_names_out()]
            self.meta["_names"] = cached
        return list(cached)


def train(
    texts: Sequence[str], labels: Sequence[str], *, c: float = 4.0, cv: int = 5, now: datetime | None = None
) -> TrainedModel:
    if len(set(labels)) < 2:
        raise ModelError("training needs examples of both labels (acute and preparation)")
    folds = max(2, min(cv, min(list(labels).count(lab) for lab in set(labels))))
    calibrated = CalibratedClassifierCV(build_pipeline(c), method="sigmoid", cv=folds, ensemble=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        calibrated.fit(list(texts), list(labels))
    meta = {
        "format": FORMAT,
        "sklearn": sklearn.__version__,
        "data_hash": data_hash(texts, labels),
        "n_train": len(texts),
        "n_acute": sum(1 for lab in labels if lab == "acute"),
        "trained_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "c": c,
    }
    return TrainedModel(calibrated, meta)


def _vectorizers(model_estimator: Any) -> dict[str, Any]:
    pipe = model_estimator.calibrated_classifiers_[0].estimator
    return dict(pipe.named_steps["features"].transformer_list)


def save(model: TrainedModel, path: Path) -> None:
    """Write the model with skops. Vocabularies travel as two arrays each, not as a dict:
    skops audits a dict item by item, which made loading take seconds."""
    import skops.io as sio

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in model.meta.items() if not k.startswith("_")}
    vectorizers = _vectorizers(model.estimator)
    vocab: dict[str, Any] = {}
    saved = {name: v.vocabulary_ for name, v in vectorizers.items()}
    try:
        for name, v in vectorizers.items():
            terms = sorted(v.vocabulary_, key=v.vocabulary_.__getitem__)
            vocab[name] = np.array(terms, dtype=str)
            v.vocabulary_ = {}
        tmp = path.with_suffix(path.suffix + ".tmp")
        sio.dump({"estimator": model.estimator, "vocab": vocab, "meta_json": json.dumps(meta)}, tmp)
    finally:
        for name, v in vectorizers.items():
            v.vocabulary_ = saved[name]
    tmp.replace(path)


def load(path: Path, *, expected_data_hash: str | None = None) -> TrainedModel:
    import skops.io as sio

    hint = "run `omo-mailbot train` to build a new one"
    if not path.exists():
        raise ModelError(f"model file {path} not found; {hint}")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ModelError(f"model file {path} is corrupt ({type(exc).__name__}); {hint}") from None
    unknown = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unknown:
        raise ModelError(f"model file {path} contains types this version does not trust: {', '.join(unknown)}; {hint}")
    try:
        payload = sio.load(path, trusted=sorted(set(untrusted)))
        meta = json.loads(payload["meta_json"])
        estimator = payload["estimator"]
        for name, v in _vectorizers(estimator).items():
            v.vocabulary_ = {str(term): i for i, term in enumerate(payload["vocab"][name])}
    except Exception as exc:
        raise ModelError(f"model file {path} cannot be read ({type(exc).__name__}: {exc}); {hint}") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"model file {path} has format {meta.get('format')}, this version reads {FORMAT}; {hint}")
    if meta.get("sklearn") != sklearn.__version__:
        raise ModelError(
            f"model file {path} was trained with scikit-learn {meta.get('sklearn')}, "
            f"this installation has {sklearn.__version__}; {hint}"
        )
    if expected_data_hash is not None and meta.get("data_hash") != expected_data_hash:
        raise ModelError(f"model file {path} was trained on other data than the current corpus and relabels; {hint}")
    return TrainedModel(estimator, meta)
