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
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
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
# Distinct words whose analysis (tokens, character n-grams) is remembered, and the longest word that
# is. Ordinary words are short and recur; long tokens (URLs, encoded data) rarely recur and cost
# most, so they are analysed every time. At most about 13 MB even when every word has the maximum
# length and is made of known n-grams (measured: 10,000 words of 32 characters).
WORD_CACHE_LIMIT = 10_000
WORD_CACHE_MAX_LENGTH = 32
# Token patterns whose tokens are the same whether a text is searched whole or word by word (split at
# whitespace): scikit-learn's default, which training uses. It never matches whitespace, and its \b
# finds the same boundary at a space as at either end of a string, because no character is both
# whitespace and \w. For these a word's tokens are remembered with its character n-grams.
_WORD_LOCAL_PATTERNS = frozenset([r"(?u)\b\w\w+\b"])

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
        """text -> (ids of the known terms in it, how often each occurs), ids unique and ascending."""
        return _Analyzer((self,)).counts


class _WordGrams:
    """A ``word`` family's n-grams of a token list, as ids of known terms (in the analyzer's id space).

    With a word-local token pattern (see ``_WORD_LOCAL_PATTERNS``) the analyzer remembers each word's
    single tokens (``word_ids``), and only the n-grams of two or more tokens, which span words, are
    looked up per text (``text_ids``). Such an n-gram is looked up as a tuple of tokens: the tokens
    already carry their hashes, so this skips building and hashing a joined string per n-gram, and
    ``"a b"`` is the tuple ``("a", "b")`` exactly because no token holds a space. With other
    patterns the text's tokens are joined as scikit-learn joins them, every n looked up per text.
    """

    def __init__(self, family: Family, offset: int, slot: int) -> None:
        lo, hi = family.ngram
        self.word_local = family.token_pattern in _WORD_LOCAL_PATTERNS
        self.token = re.compile(family.token_pattern)
        self.slot = slot  # where this family's tokens are in a _Word's tokens, if word-local
        self.vocab = {term: offset + i for i, term in enumerate(family.terms)}
        self.unigrams = lo == 1
        self.spanning = range(max(lo, 2), hi + 1) if self.word_local else range(lo, hi + 1)
        self.tuples = {}
        if self.word_local and hi > 1:
            self.tuples = {tuple(t.split(" ")): offset + i for i, t in enumerate(family.terms) if " " in t}

    def word_ids(self, tokens: Sequence[str]) -> list[int]:
        """Ids of the known single tokens among one word's ``tokens`` (word-local patterns only)."""
        return [i for i in map(self.vocab.get, tokens) if i is not None] if self.unigrams else []

    def text_ids(self, tokens: list[str]) -> list[int]:
        """Ids of the known n-grams of a text's ``tokens`` that the words' ids leave out, once per occurrence."""
        found: list[int] = []
        for n in self.spanning:
            if n == 1:
                hits = map(self.vocab.get, tokens)
            else:
                grams = zip(*(tokens[k:] for k in range(n)), strict=False)
                hits = map(self.tuples.get, grams) if self.word_local else map(self.vocab.get, map(" ".join, grams))
            found += [i for i in hits if i is not None]
        return found


@dataclass(frozen=True, slots=True)
class _Word:
    """What the analyzer remembers of one whitespace-separated word: its tokens for each word-local
    ``word`` family, and the ids of the known terms inside it: those tokens that are terms, and its
    character n-grams for every ``char_wb`` family."""

    tokens: tuple[tuple[str, ...], ...]
    ids: Ids


class _Analyzer:
    """Counts the known terms of a text for several families at once.

    The families' terms share one id space, one family after the other (``starts``), so one text
    gives one array of ids and one of counts for all families: the arrays are small (a few hundred
    ids), numpy's cost per call outweighs its cost per element, and counting the families together
    halves the calls. The text is split into whitespace-separated words and each distinct word is
    analysed once (and remembered, see ``WORD_CACHE_LIMIT``): character n-grams never cross a space,
    and neither do the tokens of a word-local pattern, so most of a text's terms are its words'
    terms, each counted as often as its word occurs; only word n-grams of two or more tokens span
    words.
    """

    def __init__(self, families: Sequence[Family]) -> None:
        sizes = [len(family.terms) for family in families]
        self.starts: list[int] = [sum(sizes[:k]) for k in range(len(families))]
        self.words: list[_WordGrams] = []
        self.local: list[_WordGrams] = []  # the word-local ones, whose tokens a _Word remembers
        self.chars: list[tuple[dict[str, int], int, int]] = []  # (vocab in the shared id space, lo, hi)
        for family, start in zip(families, self.starts, strict=True):
            if family.analyzer == "word":
                grams = _WordGrams(family, start, slot=len(self.local))
                self.words.append(grams)
                if grams.word_local:
                    self.local.append(grams)
            else:
                vocab = {term: start + i for i, term in enumerate(family.terms)}
                self.chars.append((vocab, *family.ngram))
        self.known: dict[str, _Word] = {}

    def counts(self, text: str) -> tuple[Ids, Floats]:
        """(ids of the known terms in ``text``, how often each occurs), ids unique and ascending."""
        lowered = text.lower()
        words = lowered.split()
        occurrences = Counter(words)
        analysed = [self._word(word) for word in occurrences]
        # what to count: each word's ids as often as the word occurs, the spanning n-grams once
        parts: list[list[int] | Ids] = [word.ids for word in analysed]
        weights: list[int] = list(occurrences.values())
        for grams in self.words:
            if not grams.spanning:  # a word-local family of single tokens: all in the words' ids
                continue
            if grams.word_local:
                # the words' remembered tokens, put together in C rather than a Python loop per word
                tokens_of = dict(zip(occurrences, [word.tokens[grams.slot] for word in analysed], strict=True))
                tokens = list(chain.from_iterable(map(tokens_of.__getitem__, words)))
            else:
                tokens = grams.token.findall(lowered)
            found = grams.text_ids(tokens)
            if found:  # an empty list would make numpy guess a float array
                parts.append(found)
                weights.append(1)
        return _tally(parts, weights)

    def _word(self, word: str) -> _Word:
        """The remembered analysis of ``word``, or a new one. Ordinary words are short and recur; long
        tokens (URLs, encoded data) rarely recur and would cost most memory, so they are not kept."""
        found = self.known.get(word)
        if found is None:
            tokens = tuple(tuple(grams.token.findall(word)) for grams in self.local)
            ids = [i for grams, own in zip(self.local, tokens, strict=True) for i in grams.word_ids(own)]
            found = _Word(tokens, np.array(ids + self._char_ids(word), dtype=np.intp))
            if len(word) <= WORD_CACHE_MAX_LENGTH:
                if len(self.known) >= WORD_CACHE_LIMIT:
                    self.known.clear()
                self.known[word] = found
        return found

    def _char_ids(self, word: str) -> list[int]:
        """Ids of the known character n-grams of ``word`` padded with one space on either side."""
        padded = f" {word} "
        size = len(padded)
        out: list[int] = []
        for vocab, lo, hi in self.chars:
            for n in range(lo, hi + 1):
                if n >= size:  # the whole padded word, once, stands for every longer n
                    if (i := vocab.get(padded)) is not None:
                        out.append(i)
                    break
                out += [i for k in range(size - n + 1) if (i := vocab.get(padded[k : k + n])) is not None]
        return out


def _tally(parts: Sequence[list[int] | Ids], weights: Sequence[int]) -> tuple[Ids, Floats]:
    """(the distinct ids of ``parts``, ascending; for each, the sum of the weights of the parts it is in).

    Each id is packed with its part's weight in its low 32 bits, so that one plain sort (about half
    the cost of the argsort ``np.unique`` needs to carry weights along) brings every id's weights
    together. Ids are far below 2**31 (a vocabulary that large would not fit in memory) and a weight
    is how often a word occurs in one text, far below 2**32."""
    sizes = [len(part) for part in parts]
    if not sum(sizes):
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.float64)
    packed = np.concatenate(parts, dtype=np.int64) << 32
    packed |= np.repeat(np.array(weights, dtype=np.int64), sizes)
    packed.sort()
    ids = packed >> 32
    first = np.empty(ids.size, dtype=np.bool_)  # where each distinct id begins
    first[0] = True
    np.not_equal(ids[1:], ids[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    tf = np.add.reduceat(packed & 0xFFFFFFFF, starts)
    return ids[starts].astype(np.intp, copy=False), tf.astype(np.float64)


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
        vectorizer gives them (1 + log tf, times idf, the family's vector scaled to length 1).

        All families are counted and weighed in one go (see :class:`_Analyzer`); each family's
        terms are one slice of the ascending ids, cut where the next family's ids start."""
        analyzer, idf = self._analyzer()
        keys, tf = analyzer.counts(text)
        values = (np.log(tf) + 1.0) * idf[keys]
        cuts = [*np.searchsorted(keys, analyzer.starts[1:]).tolist(), keys.size]
        lo = 0
        for family, start, hi in zip(self.families, analyzer.starts, cuts, strict=True):
            family_values = values[lo:hi]
            norm = math.sqrt(float(family_values @ family_values)) if hi > lo else 0.0
            if norm > 0.0:
                yield family, keys[lo:hi] - start, family_values / norm
            lo = hi

    def _probability(self, decision: float) -> float:
        a, b = self.calibration
        exponent = a * decision + b
        if exponent > 700.0:  # exp would overflow; the probability is 0 to double precision
            return 0.0
        return 1.0 / (1.0 + math.exp(exponent))

    def _analyzer(self) -> tuple[_Analyzer, Floats]:
        """The analyzer of all families and their idf weights one after the other, built on first use."""
        built = self.cache.get("analyzer")
        if built is None:
            idf = np.concatenate([family.idf for family in self.families])
            built = self.cache["analyzer"] = (_Analyzer(self.families), idf)
        return built


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
