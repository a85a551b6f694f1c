"""The learned model as the service runs it: numpy only, no scikit-learn.

``omo-mailbot train`` fits a scikit-learn pipeline (:mod:`omo_mailbot.training`):
tf-idf over words (1-2 grams) and over characters (2-5 grams inside word
boundaries), a class-balanced logistic regression, and sigmoid calibration.
Once fitted, that pipeline is nothing but numbers: per feature family a
vocabulary, its idf weights and its coefficients, then one intercept and the
two calibration parameters. This module holds those numbers and computes
``predict_proba`` from them; ``tests/test_model_export.py`` checks that both
agree to 1e-9 on every text of the seed corpus and on the robustness corpus.

Why not keep the fitted pipeline: importing scikit-learn and SciPy costs the
service about 100 MB of its memory and a second at start-up, and it asks for
the scikit-learn version the model was fitted with. The model file is an
``.npz`` of plain arrays, read without pickle; anything else, an older format
included, is refused with a message that names ``omo-mailbot train``.

The model sees only the subject and the new text of a mail, capped in length,
which keeps it fast and keeps quoted history from deciding.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ModelError

MAX_CHARS = 1500
FORMAT = 2
HINT = "run `omo-mailbot train` to build a new one"
# Terms travel as one UTF-8 blob joined by this character. Neither analyzer can make it part of a
# term (word tokens are \w runs; character n-grams never hold whitespace but their padding space).
SEPARATOR = "\n"
# Distinct words whose character n-grams are remembered, and the longest word that is. Ordinary
# words are short and recur; long tokens (URLs, encoded data) rarely recur and cost most, so they
# are analysed every time. At most about 10 MB even when every word has the maximum length.
WORD_CACHE_LIMIT = 10_000
WORD_CACHE_MAX_LENGTH = 32

Floats = npt.NDArray[np.float64]
Ids = npt.NDArray[np.intp]


def model_text(subject: str, new_text: str) -> str:
    """What the model reads: the subject and the new text, capped."""
    return f"{subject}\n{new_text}"[:MAX_CHARS].lower()


def data_hash(texts: Sequence[str], labels: Sequence[str]) -> str:
    h = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        h.update(label.encode() + b"\0" + text.encode("utf-8", "replace") + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Family:
    """One feature family: how text becomes terms, and what each known term weighs.

    ``analyzer`` is ``word`` (``token_pattern`` tokens, joined into n-grams by
    one space) or ``char_wb`` (character n-grams of each whitespace-separated
    word padded with one space on either side). Both lower-case the text first.
    ``weights`` are the logistic regression's coefficients, signed so that a
    positive weight pushes towards acute.
    """

    name: str
    analyzer: str
    ngram: tuple[int, int]
    token_pattern: str
    terms: tuple[str, ...]
    idf: Floats
    weights: Floats

    def __post_init__(self) -> None:
        if self.analyzer not in ("word", "char_wb"):
            raise ModelError(f"feature family {self.name!r} has an unknown analyzer {self.analyzer!r}; {HINT}")
        lo, hi = self.ngram
        if not 1 <= lo <= hi <= 16:
            raise ModelError(f"feature family {self.name!r} has an impossible n-gram range {self.ngram}; {HINT}")
        if self.idf.ndim != 1 or self.weights.ndim != 1:
            raise ModelError(f"feature family {self.name!r} has weights that are not one row of numbers; {HINT}")
        if not len(self.terms) == self.idf.shape[0] == self.weights.shape[0]:
            raise ModelError(f"feature family {self.name!r} has terms and weights of different lengths; {HINT}")
        if self.analyzer == "word":
            try:
                re.compile(self.token_pattern)
            except re.error as exc:
                unusable = f"feature family {self.name!r} has an unusable token pattern ({exc})"
                raise ModelError(f"{unusable}; {HINT}") from None
        if not (np.isfinite(self.idf).all() and np.isfinite(self.weights).all()):
            raise ModelError(f"feature family {self.name!r} holds weights that are not finite numbers; {HINT}")

    def counter(self) -> Callable[[str], tuple[Ids, Floats]]:
        """text -> (ids of the known terms in it, how often each occurs), ids unique."""
        vocab = {term: i for i, term in enumerate(self.terms)}
        ids = self._word_ids(vocab) if self.analyzer == "word" else self._char_ids(vocab)

        def count(text: str) -> tuple[Ids, Floats]:
            found = ids(text)
            if found.size == 0:
                return found, np.empty(0, dtype=np.float64)
            keys, tf = np.unique(found, return_counts=True)
            return keys, tf.astype(np.float64)

        return count

    def _word_ids(self, vocab: dict[str, int]) -> Callable[[str], Ids]:
        token = re.compile(self.token_pattern)
        lo, hi = self.ngram

        def ids(text: str) -> Ids:
            tokens: list[str] = token.findall(text.lower())
            out: list[int] = []
            for n in range(lo, hi + 1):
                out += [i for i in map(vocab.get, _word_grams(tokens, n)) if i is not None]
            return np.array(out, dtype=np.intp)

        return ids

    def _char_ids(self, vocab: dict[str, int]) -> Callable[[str], Ids]:
        """Character n-grams never cross a space, so a text's n-grams are its words' n-grams put
        together: each distinct word is analysed once and its known n-grams remembered (bounded)."""
        lo, hi = self.ngram
        known: dict[str, Ids] = {}

        def of_word(word: str) -> Ids:
            padded = f" {word} "
            size = len(padded)
            out = []
            for n in range(lo, hi + 1):
                if n >= size:  # the whole padded word, once, stands for every longer n
                    if (i := vocab.get(padded)) is not None:
                        out.append(i)
                    break
                out += [i for k in range(size - n + 1) if (i := vocab.get(padded[k : k + n])) is not None]
            return np.array(out, dtype=np.intp)

        def ids(text: str) -> Ids:
            parts = []
            for word in text.lower().split():
                found = known.get(word)
                if found is None:
                    found = of_word(word)
                    if len(word) <= WORD_CACHE_MAX_LENGTH:
                        if len(known) >= WORD_CACHE_LIMIT:
                            known.clear()
                        known[word] = found
                parts.append(found)
            return np.concatenate(parts) if parts else np.empty(0, dtype=np.intp)

        return ids


def _word_grams(tokens: list[str], n: int) -> list[str]:
    """The n-grams of a token list, joined by one space (pairs built directly: the common, hot case)."""
    if n == 1:
        return tokens
    if n == 2:
        return [f"{a} {b}" for a, b in pairwise(tokens)]
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


@dataclass
class TrainedModel:
    """A fitted, calibrated linear model over tf-idf features, and what it was trained on.

    P(acute) = 1 / (1 + exp(a * d + b)), with d = intercept + the sum over the
    families of (weights . v) / |v|, where v holds (1 + log tf) * idf for each
    known term of the text (sublinear tf, l2 norm per family).
    """

    families: tuple[Family, ...]
    intercept: float
    calibration: tuple[float, float]
    meta: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        numbers = (self.intercept, *self.calibration)
        if not self.families or not all(math.isfinite(x) for x in numbers):
            raise ModelError(f"the model has no features or a parameter that is not a finite number; {HINT}")

    @property
    def version(self) -> str:
        return f"sk{self.meta.get('sklearn')}-{str(self.meta.get('data_hash', ''))[:12]}"

    def acute_probability(self, texts: Sequence[str]) -> list[float]:
        return [self._probability(self.decision(text)) for text in texts]

    def decision(self, text: str) -> float:
        """The calibrated classifier's input for one text (the linear model's decision value)."""
        total = self.intercept
        for family, keys, tfidf in self._features(text):
            total += float(tfidf @ family.weights[keys])
        return total

    def top_terms(self, text: str, k: int = 8) -> list[tuple[str, float]]:
        """Terms that pushed this text most towards (positive) or away from acute (negative).
        Character n-grams are shown with a leading ``~``."""
        contributions: list[tuple[str, float]] = []
        for family, keys, tfidf in self._features(text):
            mark = "" if family.analyzer == "word" else "~"
            for key, v in zip(keys.tolist(), (tfidf * family.weights[keys]).tolist(), strict=True):
                contributions.append((mark + family.terms[key], v))
        contributions.sort(key=lambda t: abs(t[1]), reverse=True)
        return [(n, round(c, 4)) for n, c in contributions[:k]]

    def _features(self, text: str) -> Iterator[tuple[Family, Ids, Floats]]:
        """Per family with any known term in ``text``: the terms' ids and their tf-idf values, as the
        vectorizer gives them (1 + log tf, times idf, the family's vector scaled to length 1)."""
        for family, count in zip(self.families, self._counters(), strict=True):
            keys, tf = count(text)
            if keys.size == 0:
                continue
            values = (np.log(tf) + 1.0) * family.idf[keys]
            norm = math.sqrt(float(values @ values))
            if norm > 0.0:
                yield family, keys, values / norm

    def _probability(self, decision: float) -> float:
        a, b = self.calibration
        exponent = a * decision + b
        if exponent > 700.0:  # exp would overflow; the probability is 0 to double precision
            return 0.0
        return 1.0 / (1.0 + math.exp(exponent))

    def _counters(self) -> list[Callable[[str], tuple[Ids, Floats]]]:
        counters = self.cache.get("counters")
        if counters is None:
            counters = self.cache["counters"] = [family.counter() for family in self.families]
        return list(counters)


def save(model: TrainedModel, path: Path) -> None:
    """Write the model as an ``.npz`` of plain arrays (no pickle), atomically."""
    arrays: dict[str, Any] = {
        "meta_json": np.array(json.dumps({**model.meta, "format": FORMAT})),
        "intercept": np.array([model.intercept], dtype=np.float64),
        "calibration": np.array(model.calibration, dtype=np.float64),
        "families": np.array(json.dumps([_family_header(f) for f in model.families])),
    }
    for family in model.families:
        if any(SEPARATOR in term for term in family.terms):
            raise ModelError(f"feature family {family.name!r} has a term with a line break; it cannot be saved")
        blob = SEPARATOR.join(family.terms).encode("utf-8")
        arrays[f"{family.name}.terms"] = np.frombuffer(blob, dtype=np.uint8)
        arrays[f"{family.name}.idf"] = np.asarray(family.idf, dtype=np.float64)
        arrays[f"{family.name}.weights"] = np.asarray(family.weights, dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    tmp.replace(path)


def _family_header(family: Family) -> dict[str, Any]:
    return {
        "name": family.name,
        "analyzer": family.analyzer,
        "ngram": list(family.ngram),
        "token_pattern": family.token_pattern,
        "size": len(family.terms),
    }


def load(path: Path) -> TrainedModel:
    if not path.exists():
        raise ModelError(f"model file {path} not found; {HINT}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a single .npy array, not a model
            raise ValueError("one array, not an archive of arrays")
        with loaded as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        unreadable = f"model file {path} is not a model this version can read ({type(exc).__name__})"
        raise ModelError(f"{unreadable}; {HINT}") from None
    try:
        meta = json.loads(str(arrays["meta_json"]))
    except (KeyError, ValueError):
        raise ModelError(f"model file {path} is not an omo-mailbot model of format {FORMAT}; {HINT}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ModelError(f"model file {path} has format {found}, this version reads {FORMAT}; {HINT}")
    try:
        families = tuple(_read_family(header, arrays) for header in json.loads(str(arrays["families"])))
        intercept = float(arrays["intercept"][0])
        a, b = (float(x) for x in arrays["calibration"])
        return TrainedModel(families, intercept, (a, b), meta)
    except ModelError as exc:
        raise ModelError(f"model file {path}: {exc}") from None
    except (KeyError, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise ModelError(f"model file {path} cannot be read ({type(exc).__name__}: {exc}); {HINT}") from None


def _read_family(header: dict[str, Any], arrays: dict[str, Any]) -> Family:
    name = str(header["name"])
    blob = arrays[f"{name}.terms"].tobytes().decode("utf-8")
    terms = tuple(blob.split(SEPARATOR)) if blob else ()
    if len(terms) != int(header["size"]):
        raise ModelError(f"feature family {name!r} should have {header['size']} terms, the file has {len(terms)}")
    lo, hi = (int(x) for x in header["ngram"])
    return Family(
        name=name,
        analyzer=str(header["analyzer"]),
        ngram=(lo, hi),
        token_pattern=str(header["token_pattern"]),
        terms=terms,
        idf=np.asarray(arrays[f"{name}.idf"], dtype=np.float64),
        weights=np.asarray(arrays[f"{name}.weights"], dtype=np.float64),
    )
