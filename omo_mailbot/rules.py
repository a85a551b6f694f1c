"""Operator rules: named symbols with weights, in TOML (the Rspamd model).

A rule file holds ``[[rule]]`` tables::

    [[rule]]
    symbol = "CROWD_AT_TOWN_HALL"            # UPPER_SNAKE, unique over all files
    description = "A crowd gathers at the town hall"  # shown to contact persons
    weight = 3.0                             # points towards acute (negative: away)
    scope = "text"                           # text: subject + new text (default)
                                             # subject | body (new text only) | all (incl. quoted history)
    words = ["demonstrant*", "blokkade"]     # whole words; * = any ending; Dutch endings
                                             # (-e, -en, -s, -d, -t, -de, -te, ...) match by default
    phrases = ["voor het gemeentehuis"]      # whole phrases, any whitespace between words
    regex = ['\\bnu\\s+(?:al\\s+)?\\d+\\s+mensen']  # Python regular expressions, case-insensitive
    headers = { "x-priority" = "^1" }        # header name -> regex on its decoded value
    sender_domains = ["politie.nl"]          # From domain or a subdomain of it
    requires = ["URGENT_TIME", "UNREST"]     # composite: fires only when all of these fired
    force = "acute"                          # optional: decide regardless of the score

A rule fires when any of its matchers matches (and all ``requires`` symbols
fired). Loading collects every problem, each naming file, line, rule and key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import regexrisk, tomlfile
from .errors import ConfigError, Problem
from .tomlfile import KeyPath, TomlDoc

SCOPES: tuple[str, ...] = ("text", "subject", "body", "all")
FORCES: tuple[str, ...] = ("acute", "preparation")
SYMBOL = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
WEIGHT_RANGE = (-50.0, 50.0)
RULE_KEYS = frozenset(
    {
        "symbol",
        "description",
        "weight",
        "scope",
        "words",
        "phrases",
        "regex",
        "headers",
        "sender_domains",
        "requires",
        "force",
        "inflect",
    }
)
DUTCH_ENDINGS = r"(?:e|en|s|es|n|d|t|de|te|den|ten|er|ere|st|ste)?"
MAX_SNIPPETS = 3
WORD_START = r"(?<!\w)"  # how every word and phrase regex begins

_WORD_CHARS = re.compile(r"^[\w\-'.* ]+$", re.UNICODE)


@dataclass(frozen=True)
class MatchContext:
    """The parts of one mail that rules look at (all text already lower-cased where useful)."""

    subject: str
    body: str
    quoted: str
    headers: tuple[tuple[str, str], ...]
    sender_domain: str

    def text_for(self, scope: str) -> str:
        if scope == "subject":
            return self.subject
        if scope == "body":
            return self.body
        if scope == "all":
            return f"{self.subject}\n{self.body}\n{self.quoted}"
        return f"{self.subject}\n{self.body}"


@dataclass(frozen=True)
class Hit:
    symbol: str
    weight: float
    description: str
    matched: tuple[str, ...]
    force: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "weight": self.weight,
            "description": self.description,
            "matched": list(self.matched),
            "force": self.force,
        }


@dataclass(frozen=True)
class Rule:
    symbol: str
    description: str
    weight: float
    scope: str = "text"
    pattern: re.Pattern[str] | None = None
    headers: tuple[tuple[str, re.Pattern[str]], ...] = ()
    sender_domains: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    force: str | None = None
    source: str = ""
    # (first character, regex) of each word and phrase; set when ``pattern`` holds nothing else
    literals: tuple[tuple[str, str], ...] = ()

    def match(self, ctx: MatchContext, fired: set[str], found: tuple[str, ...] | None = None) -> tuple[str, ...] | None:
        """The snippets that make this rule fire, or None; ``found`` is what a shared scan already found."""
        if self.requires and not all(s in fired for s in self.requires):
            return None
        snippets: list[str] = list(found or ())
        if self.pattern is not None and found is None:
            for m in self.pattern.finditer(ctx.text_for(self.scope)):
                snippets.append(m.group(0).strip())
                if len(snippets) >= MAX_SNIPPETS:
                    break
        for name, rx in self.headers:
            for key, value in ctx.headers:
                if key == name and rx.search(value):
                    snippets.append(f"{name}: {value[:80]}")
                    break
        domain = ctx.sender_domain
        for d in self.sender_domains:
            if domain == d or domain.endswith("." + d):
                snippets.append(f"sender domain {d}")
        if snippets:
            return tuple(snippets)
        has_own_matcher = self.pattern is not None or self.headers or self.sender_domains
        if self.requires and not has_own_matcher:
            return tuple(f"all of {', '.join(self.requires)}" for _ in (0,))
        return None


def _fold_extra() -> re.Pattern[str] | None:
    """The non-ASCII letters that ``re`` under IGNORECASE equates with a letter of another lower case
    form (Python's own table); None where that table is not available, which turns the shortcut off."""
    try:
        from re import _casefix  # type: ignore[attr-defined]
    except ImportError:
        return None
    extra: dict[int, tuple[int, ...]] = getattr(_casefix, "_EXTRA_CASES", {})
    letters = sorted({chr(c) for k, v in extra.items() for c in (k, *v) if c >= 0x80})
    return re.compile("[" + "".join(re.escape(c) for c in letters) + "]") if letters else None


_FOLD_EXTRA = _fold_extra()
# those of them below U+0100 (µ): on text of such characters only, a substring test replaces the regex
_FOLD_EXTRA_LATIN1: tuple[str, ...] = tuple(
    chr(c) for c in range(0x80, 0x100) if _FOLD_EXTRA is not None and _FOLD_EXTRA.match(chr(c))
)


class SharedScan:
    """One pass over a scope's text for every rule made only of words and phrases.

    Each rule's own regex scans the whole text; with ten rules that is ten passes
    (about 2.6 ms for a 7 KB mail). Here one zero-width pattern, the union of all
    their words, finds every position where some word starts; only there, and
    only for the rules with a word starting with that letter, is a rule's own
    regex tried, with the bookkeeping of ``finditer`` (leftmost, not
    overlapping, at most MAX_SNIPPETS). The result is what each rule's
    ``finditer`` gives (tests/test_fast_paths.py), five times faster.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        literals = list(dict.fromkeys(lit for r in self.rules for lit in r.literals))
        source = f"(?=(?:{combined_pattern(literals, [])}))"
        self.pattern = re.compile(source, re.IGNORECASE)
        # The words are lower case; on lower-cased text the same positions are found without
        # IGNORECASE, twice as fast, unless a letter with extra case equivalents is involved.
        plain = _FOLD_EXTRA is not None and not _FOLD_EXTRA.search(source)
        self.lowered = re.compile(source) if plain else None
        # Every word starts with (?<!\w): past the first character, a word can start only right after a
        # non-word character. A pattern that begins with \W lets ``re`` skip from one such character to
        # the next in C instead of trying the lookahead at every position (see _word_starts).
        after = f"\\W(?=(?:{combined_pattern(literals, [], lead=False)}))" if _all_lead(literals) else None
        self.after = None if after is None else re.compile(after, re.IGNORECASE)
        self.after_lowered = None if after is None or not plain else re.compile(after)

        # Under IGNORECASE an ASCII letter matches only its own two cases and a few non-ASCII
        # letters (K, ſ, İ, ı). A rule is tried everywhere if one of its words starts outside
        # ASCII, or does not start with a literal character at all ("*straat" starts with \w*).
        # Otherwise it is tried where the text's first two letters are those of one of its words
        # (its first letter only, for a word such as "u" or "a*").
        keys = {rule.symbol: {_lead_key(f, p) for f, p in rule.literals} for rule in self.rules}
        everywhere = tuple(r for r in self.rules if None in keys[r.symbol])

        def having(wanted: set[str | None]) -> tuple[Rule, ...]:
            rules = [r for r in self.rules if keys[r.symbol] & wanted]
            return tuple(rules) + tuple(r for r in everywhere if r not in rules)

        known = {k for ks in keys.values() for k in ks if k is not None}
        self.by_char = {k[0]: having({x for x in known if x[0] == k[0]}) for k in known}
        self.by_first = {k[0]: having({k[0]}) for k in known}
        self.by_pair = {k: having({k, k[0]}) for k in known if len(k) == 2}
        self.everywhere = everywhere

    def candidates(self, text: str, at: int) -> tuple[Rule, ...]:
        """The rules that may match at ``at`` in ``text``, judged by its first one or two characters."""
        c = text[at]
        if not c.isascii():
            return self.rules
        two = text[at : at + 2]
        if len(two) == 2 and two.isascii():
            two = two.lower()
            return self.by_pair.get(two) or self.by_first.get(two[0], self.everywhere)
        return self.by_char.get(c.lower(), self.everywhere)

    def scan(self, text: str) -> dict[str, tuple[str, ...]]:
        found: dict[str, list[str]] = {r.symbol: [] for r in self.rules}
        resume: dict[str, int] = {}
        open_rules = len(self.rules)
        for at in self._word_starts(text):
            for rule in self.candidates(text, at):
                snippets = found[rule.symbol]
                if len(snippets) >= MAX_SNIPPETS or resume.get(rule.symbol, 0) > at:
                    continue
                m = rule.pattern.match(text, at) if rule.pattern is not None else None
                if m is not None:
                    snippets.append(m.group(0).strip())
                    resume[rule.symbol] = m.end()
                    if len(snippets) == MAX_SNIPPETS:
                        open_rules -= 1
            if not open_rules:
                break  # every rule has all the snippets it keeps: the rest of the text changes nothing
        return {symbol: tuple(snippets) for symbol, snippets in found.items()}

    def _word_starts(self, text: str) -> Iterator[int]:
        """Where some word may match: a superset of every rule's match positions in ``text``."""
        lowered = _plain_lower(text) if self.lowered is not None else None
        if lowered is not None and self.lowered is not None:
            return self._starts(lowered, self.lowered, self.after_lowered)
        return self._starts(text, self.pattern, self.after)

    @staticmethod
    def _starts(text: str, anywhere: re.Pattern[str], after: re.Pattern[str] | None) -> Iterator[int]:
        """The positions where ``anywhere`` (a lookahead) matches; ``after`` is the same lookahead behind
        a non-word character, which finds the same positions past 0 faster."""
        if after is None:
            yield from (m.start() for m in anywhere.finditer(text))
            return
        if anywhere.match(text):
            yield 0
        for m in after.finditer(text):
            yield m.end()


def _plain_lower(text: str) -> str | None:
    """``text`` lower-cased, when that keeps every character in its place (one character for one; İ is
    two in lower case) and leaves none of the letters that IGNORECASE also matches to a different
    lower case letter (ſ = s, ı = i, µ = μ, ...): on such text the lower-case words without
    IGNORECASE find exactly what the words find with it. Else None."""
    if _FOLD_EXTRA is None:
        return None
    lowered = text.lower()
    if len(lowered) != len(text):
        return None
    if lowered.isascii():  # a flag of the string: no scan
        return lowered
    try:
        lowered.encode("latin-1")  # a copy, much faster than a regex over the text
    except UnicodeEncodeError:
        return None if _FOLD_EXTRA.search(lowered) else lowered
    return None if any(c in lowered for c in _FOLD_EXTRA_LATIN1) else lowered


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    hash: str
    files: tuple[str, ...] = field(default_factory=tuple)
    scans: dict[str, SharedScan] = field(default_factory=dict, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        by_scope: dict[str, list[Rule]] = {}
        for rule in self.rules:
            if rule.literals and rule.pattern is not None:
                by_scope.setdefault(rule.scope, []).append(rule)
        self.scans.update({scope: SharedScan(rules) for scope, rules in by_scope.items()})

    @property
    def symbols(self) -> set[str]:
        return {r.symbol for r in self.rules}

    def shared_scan(self, ctx: MatchContext) -> dict[str, tuple[str, ...]]:
        """What every word-and-phrase rule matches in ``ctx``, one pass per scope."""
        found: dict[str, tuple[str, ...]] = {}
        for scope, scan in self.scans.items():
            found.update(scan.scan(ctx.text_for(scope)))
        return found

    def evaluate(self, ctx: MatchContext) -> list[Hit]:
        """Every rule that fires, simple rules first, then composites (in dependency order)."""
        found = self.shared_scan(ctx)
        fired: set[str] = set()
        hits: list[Hit] = []
        pending = list(self.rules)
        for _ in range(len(pending) + 1):
            progress = False
            rest: list[Rule] = []
            for rule in pending:
                if rule.requires and not all(s in fired or s not in self.symbols for s in rule.requires):
                    rest.append(rule)
                    continue
                matched = rule.match(ctx, fired, found.get(rule.symbol))
                if matched is not None:
                    fired.add(rule.symbol)
                    hits.append(Hit(rule.symbol, rule.weight, rule.description, matched, rule.force))
                progress = True
            pending = rest
            if not pending or not progress:
                break
        return hits


def word_pattern(word: str, inflect: bool) -> str:
    """A whole-word regex for ``word``: ``*`` is any ending; Dutch endings are optional."""
    word = word.strip().lower()
    star = word.endswith("*")
    core = word.rstrip("*")
    parts = [re.escape(p).replace(r"\*", r"\w*") for p in core.split()]
    body = r"\s+".join(parts)
    if star:
        body += r"\w*"
    elif inflect:
        body += DUTCH_ENDINGS
    return rf"(?<!\w){body}(?!\w)"


def phrase_pattern(phrase: str) -> str:
    parts = [re.escape(p) for p in phrase.strip().lower().split()]
    return r"(?<!\w)" + r"[\s,]+".join(parts) + r"(?!\w)"


def _lead_key(first: str, pattern: str) -> str | None:
    """The lower-case ASCII characters a text must start with where this word or phrase matches: its
    first two when its regex begins with them as plain characters, else its first one; None when it
    does not even begin with an ASCII character of its own (such a word is tried everywhere)."""
    if not (first.isascii() and _leads_with(first, pattern)):
        return None
    rest = pattern[len(WORD_START + re.escape(first)) :]
    second = rest[:1]
    if second.isascii() and second.isalnum() and rest[1:2] not in ("?", "*", "+", "{"):
        return first.lower() + second.lower()
    return first.lower()


def _leads_with(first: str, pattern: str) -> bool:
    """Does a word's regex begin with a word start and then ``first`` itself (not "*straat": \\w*)?"""
    return bool(first) and pattern.startswith(WORD_START + re.escape(first))


def combined_pattern(literals: Sequence[tuple[str, str]], regexes: Sequence[str], *, lead: bool = True) -> str:
    r"""One regex for many words and phrases, branching on the first character.

    Python's ``re`` tries every alternative at every position; with hundreds of
    words that made rules the slowest step of a decision (about 30 ms for a
    6 KB mail). Here each word's leading ``(?<!\w)`` and first character are
    taken out and the words are grouped under ``(?<!\w)(?:d(?:emonstr...|...)|b(?:...))``:
    one assertion per position and, at a word start, one character comparison
    per group, so only the words that start with the letter there are tried.
    The matches are those of the plain alternation, in the same order
    (tests/test_fast_paths.py).

    With ``lead=False`` the leading ``(?<!\w)`` of every word is left out, for use
    where a non-word character precedes anyway; every literal must then start
    with it (:func:`_all_lead`).
    """
    head = WORD_START
    groups: dict[str, list[str]] = {}
    other: list[str] = []
    for first, pattern in literals:
        if _leads_with(first, pattern):
            groups.setdefault(re.escape(first), []).append(pattern[len(head + re.escape(first)) :])
        elif lead:
            other.append(pattern)
        elif pattern.startswith(head):
            other.append(pattern[len(head) :])
        else:
            raise ValueError(f"{pattern!r} does not start with {head}")
    parts = [f"{c}(?:{'|'.join(dict.fromkeys(rests))})" for c, rests in groups.items()]
    grouped = [f"{head if lead else ''}(?:{'|'.join(parts)})"] if parts else []
    return "|".join(grouped + other + list(regexes))


def _all_lead(literals: Sequence[tuple[str, str]]) -> bool:
    r"""Does every word and phrase regex start with (?<!\w), as word_pattern and phrase_pattern make them?"""
    return all(pattern.startswith(WORD_START) for _, pattern in literals)


def redos_risk(pattern: str) -> bool:
    """True for shapes that can backtrack catastrophically: (a+)+, (a|aa)+, (\\w+\\s?)+, (.*)* ..."""
    return regexrisk.risk(pattern) is not None


def _strings(doc: TomlDoc, key: KeyPath, value: Any, problems: list[Problem]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(doc.problem(key, "expected an array of strings"))
        return []
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            problems.append(doc.problem((*key, i), "expected a non-empty string"))
        else:
            out.append(item)
    return out


def _compile(doc: TomlDoc, key: KeyPath, pattern: str, problems: list[Problem]) -> re.Pattern[str] | None:
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        problems.append(doc.problem(key, f"regular expression does not compile: {exc}"))
        return None
    if redos_risk(pattern):
        why = regexrisk.risk(pattern) or "a nested quantifier"
        problems.append(
            doc.problem(
                key,
                f"regular expression can backtrack catastrophically: {why}; rewrite it so that every "
                "piece of text can be matched in only one way (or use a possessive quantifier such as a++)",
            )
        )
        return None
    return rx


def parse_rule(doc: TomlDoc, key: KeyPath, table: Any, problems: list[Problem]) -> Rule | None:
    if not isinstance(table, dict):
        problems.append(doc.problem(key, "expected a table"))
        return None
    before = len(problems)
    symbol = table.get("symbol")
    label = f"{tomlfile.dotted(key)}"
    if isinstance(symbol, str):
        label = f"{label}({symbol})"

    def p(sub: str, msg: str, at: KeyPath | None = None) -> None:
        line = doc.line_of(at if at is not None else (*key, sub))
        problems.append(Problem(doc.path, line, f"{label}.{sub}" if sub else label, msg))

    for name in table:
        if name not in RULE_KEYS:
            p(name, f"unknown key (known: {', '.join(sorted(RULE_KEYS))})")
    if not isinstance(symbol, str) or not SYMBOL.match(symbol):
        p("symbol", f"expected an UPPER_SNAKE name such as CROWD_AT_TOWN_HALL, got {symbol!r}")
    description = table.get("description")
    if not isinstance(description, str) or not description.strip():
        p("description", "expected a non-empty string a contact person can read")
    weight = table.get("weight", 0.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        p("weight", f"expected a number, got {weight!r}")
        weight = 0.0
    elif not WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1]:
        p("weight", f"must be between {WEIGHT_RANGE[0]:g} and {WEIGHT_RANGE[1]:g}, got {weight}")
    scope = table.get("scope", "text")
    if scope not in SCOPES:
        p("scope", f"expected one of {', '.join(SCOPES)}, got {scope!r}")
    force = table.get("force")
    if force is not None and force not in FORCES:
        p("force", f'expected "acute" or "preparation", got {force!r}')
    inflect = table.get("inflect", True)
    if not isinstance(inflect, bool):
        p("inflect", "expected true or false")
        inflect = True

    alternatives: list[str] = []
    literals: list[tuple[str, str]] = []  # (first character, pattern) of words and phrases
    for i, word in enumerate(_strings(doc, (*key, "words"), table.get("words"), problems)):
        if not _WORD_CHARS.match(word):
            p(f"words[{i}]", f"{word!r} is not a plain word; put patterns in regex", (*key, "words"))
            continue
        alternatives.append(word_pattern(word, inflect))
        literals.append((word.strip().lower()[:1], alternatives[-1]))
    for phrase in _strings(doc, (*key, "phrases"), table.get("phrases"), problems):
        alternatives.append(phrase_pattern(phrase))
        literals.append((phrase.strip().lower()[:1], alternatives[-1]))
    regexes: list[str] = []
    for i, rx in enumerate(_strings(doc, (*key, "regex"), table.get("regex"), problems)):
        if _compile(doc, (*key, "regex", i), rx, problems) is not None:
            alternatives.append(f"(?:{rx})")
            regexes.append(alternatives[-1])
    headers: list[tuple[str, re.Pattern[str]]] = []
    raw_headers = table.get("headers", {})
    if not isinstance(raw_headers, dict):
        p("headers", "expected a table of header name = regex")
    else:
        for name, rx in raw_headers.items():
            if not isinstance(rx, str):
                p(f"headers.{name}", "expected a regex string", (*key, "headers"))
                continue
            compiled = _compile(doc, (*key, "headers", name), rx, problems)
            if compiled is not None:
                headers.append((name.lower(), compiled))
    domains = [
        d.lower().lstrip("@") for d in _strings(doc, (*key, "sender_domains"), table.get("sender_domains"), problems)
    ]
    requires = _strings(doc, (*key, "requires"), table.get("requires"), problems)
    if not (alternatives or headers or domains or requires) and len(problems) == before:
        p("", "has no matcher: give words, phrases, regex, headers, sender_domains or requires", key)
    if len(problems) != before:
        # problems raised by helpers carry the bare key path: name the rule's symbol in them too
        bare = tomlfile.dotted(key)
        for n in range(before, len(problems)):
            pr = problems[n]
            if pr.key.startswith(bare + ".") and label != bare:
                problems[n] = Problem(pr.file, pr.line, label + pr.key[len(bare) :], pr.message)
        return None
    pattern = re.compile(combined_pattern(literals, regexes), re.IGNORECASE) if alternatives else None
    return Rule(
        str(symbol),
        str(description).strip(),
        float(weight),
        str(scope),
        pattern,
        tuple(headers),
        tuple(domains),
        tuple(requires),
        force,
        f"{doc.path}:{doc.line_of(key) or 0}",
        tuple(literals) if literals and not regexes else (),
    )


def content_hash(files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(files, key=lambda f: f.name):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def rule_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.toml") if p.is_file())


def parse_rule_docs(docs: Sequence[TomlDoc], problems: list[Problem]) -> list[Rule]:
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for doc in docs:
        tables = doc.data.get("rule", [])
        if not isinstance(tables, list):
            problems.append(doc.problem(("rule",), "expected [[rule]] tables"))
            continue
        for i, table in enumerate(tables):
            rule = parse_rule(doc, ("rule", i), table, problems)
            if rule is None:
                continue
            if rule.symbol in seen:
                problems.append(
                    Problem(
                        doc.path,
                        doc.line_of(("rule", i, "symbol")),
                        f"rule[{i}]({rule.symbol}).symbol",
                        f"duplicate symbol; already defined at {seen[rule.symbol]}",
                    )
                )
                continue
            seen[rule.symbol] = rule.source
            rules.append(rule)
    symbols = {r.symbol for r in rules}
    for rule in rules:
        for req in rule.requires:
            if req not in symbols:
                file, _, line = rule.source.rpartition(":")
                problems.append(
                    Problem(file, int(line) or None, f"rule({rule.symbol}).requires", f"unknown symbol {req}")
                )
    return rules


def read_docs(files: Iterable[Path], problems: list[Problem]) -> list[TomlDoc]:
    """Parse each file; a file that does not parse adds its problem and is left out."""
    docs: list[TomlDoc] = []
    for path in files:
        try:
            docs.append(tomlfile.load(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
    return docs


def load_rules(directory: Path, *, only: Iterable[str] | None = None) -> RuleSet:
    """Load every ``*.toml`` in ``directory`` holding ``[[rule]]`` tables; raise on any problem."""
    if not directory.is_dir():
        raise ConfigError([Problem(str(directory), None, "", "rules directory not found")])
    files = [f for f in rule_files(directory) if only is None or f.name in set(only)]
    problems: list[Problem] = []
    docs = [doc for doc in read_docs(files, problems) if "rule" in doc.data]
    rules = parse_rule_docs(docs, problems)
    if problems:
        raise ConfigError(problems)
    return RuleSet(tuple(rules), content_hash(files), tuple(str(f) for f in files))
