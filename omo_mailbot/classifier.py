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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

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


@dataclass
class TrainedModel:
    """A calibrated pipeline and what it was trained on."""

    estimator: Any
    meta: dict[str, Any] = field(default_factory=dict)
    # derived from the estimator on first use (see _linear_plan); never saved
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def version(self) -> str:
        return f"sk{self.meta.get('sklearn')}-{str(self.meta.get('data_hash', ''))[:12]}"

    def acute_probability(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        fast = self._direct_probability(texts)
        if fast is not None:
            return fast
        classes = list(self.estimator.classes_)
        proba = self.estimator.predict_proba(list(texts))
        col = classes.index("acute")
        return [float(p) for p in proba[:, col]]

    def _direct_probability(self, texts: Sequence[str]) -> list[float] | None:
        """The same numbers as ``predict_proba``, without sklearn's per-call overhead.

        The service asks for one text at a time; for that, FeatureUnion's joblib
        dispatch and the input validation cost as much as the features themselves
        (about 5 ms of 8 ms per mail). For the shape :func:`train` builds (one
        sigmoid-calibrated binary pipeline) this computes vectorizers -> linear
        decision -> sigmoid directly; any other shape returns None (the slow path).
        """
        import scipy.sparse as sp

        est = self.estimator
        calibrated = getattr(est, "calibrated_classifiers_", None)
        if not calibrated or len(calibrated) != 1 or len(est.classes_) != 2:
            return None
        cal = calibrated[0]
        steps = getattr(cal.estimator, "named_steps", {})
        features, clf = steps.get("features"), steps.get("clf")
        if features is None or clf is None or features.transformer_weights or len(cal.calibrators) != 1:
            return None
        plan = self._linear_plan(features, clf)
        if plan is not None:
            decision = np.array([plan(text) for text in texts], dtype=np.float64) + clf.intercept_[0]
        else:
            matrix = sp.hstack([t.transform(list(texts)) for _, t in features.transformer_list]).tocsr()
            decision = np.asarray(matrix @ clf.coef_.T).ravel() + clf.intercept_[0]
        positive = _sigmoid(cal.calibrators[0], decision)  # P(classes_[1])
        acute_is_positive = list(est.classes_).index("acute") == 1
        return [float(p) if acute_is_positive else 1.0 - float(p) for p in positive]

    def _linear_plan(self, features: Any, clf: Any) -> Callable[[str], float] | None:
        """The linear decision of one text straight from the analyzers: counts -> 1 + log tf -> idf -> l2 -> coef.

        This is what ``TfidfVectorizer(sublinear_tf=True)`` + ``LogisticRegression.decision_function``
        compute, without building sparse matrices (most of the remaining cost for one short text).
        Any vectorizer set up otherwise returns None.
        """
        cached = self.cache.get("plan")
        if cached is not None:
            return cast(Callable[[str], float], cached)
        coef = np.asarray(clf.coef_[0], dtype=np.float64)
        parts: list[tuple[Callable[[str], list[int]], Any, Any]] = []
        offset = 0
        for _, vec in features.transformer_list:
            plain = getattr(vec, "sublinear_tf", False) and vec.norm == "l2" and vec.use_idf and not vec.binary
            if not plain:
                return None
            size = len(vec.vocabulary_)
            idf = np.asarray(vec.idf_, dtype=np.float64)
            parts.append((_feature_ids(vec), idf, coef[offset : offset + size]))
            offset += size
        if offset != coef.shape[0]:
            return None

        def decide(text: str) -> float:
            total = 0.0
            for feature_ids, idf, weights in parts:
                counts = Counter(feature_ids(text))
                if not counts:
                    continue
                keys = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
                tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
                values = (np.log(tf) + 1.0) * idf[keys]
                norm = float(np.sqrt(values @ values))
                if norm > 0.0:
                    total += float(values @ weights[keys]) / norm
            return total

        self.cache["plan"] = decide
        return decide

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


def _sigmoid(calibrator: Any, decision: Any) -> Any:
    """``_SigmoidCalibration.predict`` without its input validation (a third of a decision's time)."""
    a, b = getattr(calibrator, "a_", None), getattr(calibrator, "b_", None)
    if a is None or b is None:
        return calibrator.predict(decision)
    return 1.0 / (1.0 + np.exp(a * decision + b))


# Distinct words whose character n-grams are remembered, and the longest word that is. Ordinary
# words are short and recur; long tokens (URLs, encoded data) rarely recur and cost most, so they
# are analysed every time. At most about 10 MB even when every word has the maximum length.
WORD_CACHE_LIMIT = 10_000
WORD_CACHE_MAX_LENGTH = 32


def _feature_ids(vec: Any) -> Callable[[str], list[int]]:
    """text -> the vocabulary index of every feature occurrence, as ``vec.transform`` counts them.

    Character n-grams inside word boundaries (``char_wb``) never cross a space, so
    a text's n-grams are the concatenation of its words' n-grams: each distinct
    word is analysed once and its known n-grams are remembered (bounded). This
    made the model six times faster on long mails; the other analyzers are used
    as they are.
    """
    vocab: dict[str, int] = vec.vocabulary_
    if vec.analyzer != "char_wb":
        analyze = vec.build_analyzer()
        return lambda text: [i for gram in analyze(text) if (i := vocab.get(gram)) is not None]
    prepare = vec.build_preprocessor()
    decode = vec.decode
    word_ngrams = vec._char_wb_ngrams  # the analyzer's own n-grams of one word, padded with spaces
    known: dict[str, tuple[int, ...]] = {}

    def ids(text: str) -> list[int]:
        out: list[int] = []
        for word in prepare(decode(text)).split():
            found = known.get(word)
            if found is None:
                found = tuple(i for gram in word_ngrams(word) if (i := vocab.get(gram)) is not None)
                if len(word) <= WORD_CACHE_MAX_LENGTH:
                    if len(known) >= WORD_CACHE_LIMIT:
                        known.clear()
                    known[word] = found
            out += found
        return out

    return ids


def train(
    texts: Sequence[str], labels: Sequence[str], *, c: float = 10.0, cv: int = 5, now: datetime | None = None
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


def load(path: Path) -> TrainedModel:
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
    return TrainedModel(estimator, meta)


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
