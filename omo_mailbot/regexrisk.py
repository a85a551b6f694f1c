"""Can a regular expression backtrack catastrophically? A static look at its parse tree.

Python's ``re`` backtracks; a pattern in which a repeated part can match the same
text in more than one way takes exponential time on a near-miss (``(a+)+`` on
``"aaaa…a!"``). An operator's regex runs on every mail, so a rule check refuses
those shapes before they go live. :func:`risk` walks the tree of ``re._parser``
and names the first risky shape it finds, or returns ``None``:

* a repeated group whose body can match the empty string: ``(a*)*``, ``(a?)+``;
* a repeated group with a nested quantifier that can hand characters to its
  neighbour or to the next round of the outer repeat: ``(a+)+``, ``(.*)*``,
  ``(\\w+\\s?)+``, ``([a-z]+-?)+``; ``(\\s+\\w+)+`` is fine (``\\s`` and ``\\w`` never
  share a character);
* alternatives inside a repeat that can start with the same character, or can
  both be empty: ``(\\w|\\d)+``, ``(a|a)+``, ``(a|aa)+`` (which the parser turns into
  ``a(?:|a)``: an optional ``a`` next to an ``a``).

Possessive quantifiers (``a++``) and atomic groups (``(?>...)``) never hand
characters back and count as safe. Character sets are compared on a sample
alphabet (ASCII plus common accented letters), which is enough to see overlap
between ``\\w``, ``\\d``, ``\\s``, ranges and literals. Quadratic shapes such as
``\\w+\\w+`` outside a repeat are not reported. The check is conservative: a
nested quantifier whose body it cannot analyse is reported too.
"""

from __future__ import annotations

import re
import re._parser as sre  # type: ignore[import-not-found]  # the stdlib parser; no public API gives the tree
import string
from dataclasses import dataclass
from typing import Any

ALPHABET = frozenset(string.printable + "àáâäçèéêëìíîïñòóôöùúûüßÀÁÉÈËÏÖÜ€\u00a0\u2019\u201c\u201d")
UNBOUNDED = 16  # a repeat allowing at least this many rounds counts as unbounded
_CATEGORIES = {
    "DIGIT": re.compile(r"\d"),
    "NOT_DIGIT": re.compile(r"\D"),
    "SPACE": re.compile(r"\s"),
    "NOT_SPACE": re.compile(r"\S"),
    "WORD": re.compile(r"\w"),
    "NOT_WORD": re.compile(r"\W"),
    "LINEBREAK": re.compile(r"\n"),
    "NOT_LINEBREAK": re.compile(r"[^\n]"),
}
_REPEATS = ("MAX_REPEAT", "MIN_REPEAT")
_ZERO_WIDTH = ("AT", "ASSERT", "ASSERT_NOT")


class _Opaque(Exception):
    """A node whose character set this module does not model (back-references, conditionals)."""


@dataclass(frozen=True)
class _Item:
    """One element of a repeated body: the characters it can start with, and how it can vary."""

    first: frozenset[str]
    chars: frozenset[str]  # every character it can consume
    nullable: bool
    variable: bool  # can match texts of different lengths (a quantifier, an uneven alternation)
    ambiguous: str | None = None  # a reason this element alone is risky inside a repeat


def risk(pattern: str, flags: int = re.IGNORECASE) -> str | None:
    """The first catastrophic-backtracking shape in ``pattern`` as a short reason, or None."""
    try:
        tree = sre.parse(pattern, flags)
    except (re.error, RecursionError, OverflowError):
        return None  # not compiling is reported elsewhere
    return _scan(list(tree), bool(flags & re.IGNORECASE))


def _name(op: Any) -> str:
    return str(getattr(op, "name", op))


def _scan(nodes: list[tuple[Any, Any]], icase: bool) -> str | None:
    for op, av in nodes:
        name = _name(op)
        if name in _REPEATS:
            _lo, hi, body = av
            if hi >= UNBOUNDED or hi == sre.MAXREPEAT:
                reason = _repeated_body(list(body), icase)
                if reason:
                    return reason
            inner = _scan(list(body), icase)
            if inner:
                return inner
        elif name in ("POSSESSIVE_REPEAT", "ATOMIC_GROUP"):
            inner = _scan(list(av[2] if name == "POSSESSIVE_REPEAT" else av), icase)
            if inner:
                return inner
        elif name == "SUBPATTERN":
            inner = _scan(list(av[3]), _icase(av, icase))
            if inner:
                return inner
        elif name == "BRANCH":
            for alt in av[1]:
                inner = _scan(list(alt), icase)
                if inner:
                    return inner
        elif name in ("ASSERT", "ASSERT_NOT"):
            inner = _scan(list(av[1]), icase)
            if inner:
                return inner
        elif name == "GROUPREF_EXISTS":
            for part in av[1:]:
                if part is not None:
                    inner = _scan(list(part), icase)
                    if inner:
                        return inner
    return None


def _icase(subpattern_av: Any, icase: bool) -> bool:
    _group, add, remove, _body = subpattern_av
    if add & re.IGNORECASE:
        return True
    if remove & re.IGNORECASE:
        return False
    return icase


def _repeated_body(body: list[tuple[Any, Any]], icase: bool) -> str | None:
    """Why this body, repeated without bound, can match one text in many ways (or None)."""
    try:
        items = _flatten(body, icase)
    except _Opaque:
        return "a repeated group with a back-reference or conditional cannot be checked; simplify it"
    if all(i.nullable for i in items):
        return "a repeated group can match the empty string (shape (a*)*)"
    for item in items:
        if item.ambiguous:
            return item.ambiguous
    wrap = _first_of(items)
    for index, item in enumerate(items):
        if not item.variable:
            continue
        follow = _first_of(items[index + 1 :])
        if all(i.nullable for i in items[index + 1 :]):
            follow = follow | wrap  # the next round of the outer repeat follows
        if item.chars & follow:
            return (
                "a quantifier inside a repeated group can give characters to its neighbour "
                "(shapes (a+)+, (\\w+\\s?)+, (a|aa)+)"
            )
    return None


def _first_of(items: list[_Item]) -> frozenset[str]:
    out: frozenset[str] = frozenset()
    for item in items:
        out |= item.first
        if not item.nullable:
            break
    return out


def _flatten(nodes: list[tuple[Any, Any]], icase: bool) -> list[_Item]:
    items: list[_Item] = []
    for op, av in nodes:
        name = _name(op)
        if name == "SUBPATTERN":
            items.extend(_flatten(list(av[3]), _icase(av, icase)))
        elif name in _ZERO_WIDTH:
            items.append(_Item(frozenset(), frozenset(), nullable=True, variable=False))
        elif name in _REPEATS:
            lo, hi, body = av
            inner = _flatten(list(body), icase)
            chars = frozenset().union(*(i.chars for i in inner)) if inner else frozenset()
            ambiguous = None
            if hi > 1 and (len(inner) != 1 or inner[0].variable):
                ambiguous = "a nested quantifier on a group inside a repeated group (shape ((ab)+c)+)"
            if hi > 1 and all(i.nullable for i in inner):
                ambiguous = "a repeated group can match the empty string (shape (a*)*)"
            ambiguous = ambiguous or next((i.ambiguous for i in inner if i.ambiguous), None)
            items.append(
                _Item(
                    _first_of(inner),
                    chars,
                    nullable=lo == 0 or all(i.nullable for i in inner),
                    variable=lo != hi or any(i.variable for i in inner),
                    ambiguous=ambiguous,
                )
            )
        elif name in ("POSSESSIVE_REPEAT", "ATOMIC_GROUP"):
            inner_nodes = list(av[2] if name == "POSSESSIVE_REPEAT" else av)
            inner = _flatten(inner_nodes, icase)
            chars = frozenset().union(*(i.chars for i in inner)) if inner else frozenset()
            nullable = (name == "POSSESSIVE_REPEAT" and av[0] == 0) or all(i.nullable for i in inner)
            items.append(_Item(_first_of(inner), chars, nullable=nullable, variable=False))
        elif name == "BRANCH":
            items.append(_branch([_flatten(list(alt), icase) for alt in av[1]]))
        elif name in ("GROUPREF", "GROUPREF_EXISTS"):
            raise _Opaque(name)
        else:
            chars = _charset(name, av, icase)
            items.append(_Item(chars, chars, nullable=False, variable=False))
    return items


def _branch(alternatives: list[list[_Item]]) -> _Item:
    firsts = [_first_of(alt) for alt in alternatives]
    nullables = [all(i.nullable for i in alt) for alt in alternatives]
    ambiguous = next((i.ambiguous for alt in alternatives for i in alt if i.ambiguous), None)
    if sum(nullables) > 1:
        ambiguous = ambiguous or "two alternatives inside a repeated group can both match nothing (shape (a|a)+)"
    for i in range(len(firsts)):
        for j in range(i + 1, len(firsts)):
            if firsts[i] & firsts[j]:
                ambiguous = ambiguous or "alternatives inside a repeated group can start alike (shape (\\w|\\d)+)"
    return _Item(
        frozenset().union(*firsts) if firsts else frozenset(),
        frozenset().union(*(i.chars for alt in alternatives for i in alt)),
        nullable=any(nullables),
        variable=(any(nullables) and not all(nullables)) or any(i.variable for alt in alternatives for i in alt),
        ambiguous=ambiguous,
    )


def _cased(chars: set[str], icase: bool) -> frozenset[str]:
    if icase:
        chars = chars | {c.lower() for c in chars} | {c.upper() for c in chars if len(c.upper()) == 1}
    return frozenset(c for c in chars if len(c) == 1)


def _charset(name: str, av: Any, icase: bool) -> frozenset[str]:
    if name == "LITERAL":
        return _cased({chr(av)}, icase)
    if name == "NOT_LITERAL":
        return frozenset(ALPHABET - _cased({chr(av)}, icase))
    if name == "ANY":
        return ALPHABET
    if name == "IN":
        negate = False
        chars: set[str] = set()
        for sub_op, sub_av in av:
            sub = _name(sub_op)
            if sub == "NEGATE":
                negate = True
            elif sub == "LITERAL":
                chars.add(chr(sub_av))
            elif sub == "RANGE":
                lo, hi = sub_av
                chars |= {c for c in ALPHABET if lo <= ord(c) <= hi}
                chars |= {chr(lo), chr(hi)}
            elif sub == "CATEGORY":
                chars |= _category(_name(sub_av))
            else:
                chars |= set(ALPHABET)  # unknown member: assume it may match anything
        cased = _cased(chars, icase)
        return frozenset(ALPHABET - cased) if negate else cased
    return ALPHABET  # an unmodelled single-character node: assume anything


def _category(name: str) -> set[str]:
    key = name.removeprefix("CATEGORY_").removeprefix("UNI_").removeprefix("LOC_")
    rx = _CATEGORIES.get(key)
    if rx is None:
        return set(ALPHABET)
    return {c for c in ALPHABET if rx.match(c)}
