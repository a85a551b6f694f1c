"""``rules check``: every mistake in the operators' rule, routing and roster files at once.

Loading rules for the service stops at the first broken file set; a check must
instead tell an operator everything that is wrong, each as
``file:line: key: message``, so one edit fixes all of it. On top of what
:func:`rules.parse_rule_docs` already finds (syntax, unknown keys, types,
regular expressions that do not compile or can backtrack catastrophically,
weights out of range, duplicate symbols, ``requires`` naming an unknown symbol)
this module reports:

* a rules file with other top-level tables than ``[[rule]]`` (a typo such as
  ``[[rules]]`` would otherwise be skipped silently), or with no rule at all;
* duplicate symbols also among rules that are broken in other ways;
* a symbol that takes the name the learned model uses (``MODEL_ACUTE``);
* ``requires`` chains that form a cycle (those rules can never fire);
* a threshold no mail can reach with the current weights (when given);
* whatever the roster and routing loaders find, when those files exist.

It never raises for a mistake in the files: the result carries the problems.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tomlfile
from .errors import ConfigError, Problem
from .roster import Roster, load_roster
from .routing import Routing, load_routing
from .rules import Rule, RuleSet, content_hash, parse_rule_docs, read_docs, rule_files
from .tomlfile import TomlDoc
from .verdict import MODEL_SYMBOL

_UNKNOWN = "unknown symbol "  # how parse_rule_docs words an unknown ``requires`` (re-reported here with its line)


@dataclass
class CheckReport:
    """What a check found: the problems in reading order, and the rules when they are valid."""

    problems: list[Problem] = field(default_factory=list)
    rules: RuleSet | None = None
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_rules_dir(directory: Path, *, threshold: float | None = None, model_weight: float = 0.0) -> CheckReport:
    """Check every ``*.toml`` in ``directory`` as a rules file; collect every problem."""
    report = CheckReport()
    if not directory.is_dir():
        report.problems.append(Problem(str(directory), None, "", "rules directory not found"))
        return report
    files = rule_files(directory)
    report.files = [str(f) for f in files]
    if not files:
        report.problems.append(Problem(str(directory), None, "", "no *.toml rules files in this directory"))
        return report
    problems: list[Problem] = []
    docs: list[TomlDoc] = []
    for doc in read_docs(files, problems):
        problems.extend(_file_shape(doc))
        if isinstance(doc.data.get("rule"), list):
            docs.append(doc)
    rules = parse_rule_docs(docs, problems)
    problems = [p for p in problems if not p.message.startswith(_UNKNOWN)]
    problems.extend(_unknown_requires(docs))
    problems.extend(_duplicates_among_all(docs))
    problems.extend(_reserved(docs))
    problems.extend(_cycles(docs))
    if threshold is not None and not problems:
        problems.extend(_unreachable(directory, rules, threshold, model_weight))
    report.problems = _unique(problems)
    if not report.problems:
        report.rules = RuleSet(tuple(rules), content_hash(files), tuple(str(f) for f in files))
    return report


@dataclass(frozen=True)
class OperatorFiles:
    """One valid version of everything operators edit: what a reload swaps in as a whole."""

    rules: RuleSet
    roster: Roster | None
    routing: Routing | None
    fingerprint: str  # content hash over the rules, roster and routing files


def watched_files(rules_dir: Path, roster_file: Path | None, routing_file: Path | None) -> list[Path]:
    """The files whose content makes up one version (missing roster files are simply absent)."""
    files = rule_files(rules_dir) if rules_dir.is_dir() else []
    return files + [f for f in (roster_file, routing_file) if f is not None and f.is_file()]


def fingerprint(files: list[Path]) -> str:
    """A content hash over ``files`` (name and bytes; the rules hash covers the rules files alone)."""
    h = hashlib.sha256()
    for path in files:
        h.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def check_operator_files(
    rules_dir: Path,
    roster_file: Path | None = None,
    routing_file: Path | None = None,
    *,
    threshold: float | None = None,
    model_weight: float = 0.0,
) -> tuple[OperatorFiles | None, CheckReport]:
    """Check rules, roster and routing together; the loaded version only when all of it is valid.

    A missing roster file means "no roster" (cases stay unassigned); routing without a
    roster cannot be checked against people and is skipped with it.
    """
    files = watched_files(rules_dir, roster_file, routing_file)
    stamp = fingerprint(files)
    report = check_rules_dir(rules_dir, threshold=threshold, model_weight=model_weight)
    roster: Roster | None = None
    routing: Routing | None = None
    if roster_file is not None and roster_file.is_file():
        try:
            roster = load_roster(roster_file)
        except ConfigError as exc:
            report.problems.extend(exc.problems)
    if routing_file is not None and routing_file.is_file():
        if roster is not None:
            try:
                routing = load_routing(routing_file, roster)
            except ConfigError as exc:
                report.problems.extend(exc.problems)
        else:
            try:
                tomlfile.load(routing_file)  # at least its syntax; people are checked once the roster is valid
            except ConfigError as exc:
                report.problems.extend(exc.problems)
    report.files += [str(f) for f in (roster_file, routing_file) if f is not None and f.is_file()]
    report.problems = _unique(report.problems)
    if report.problems or report.rules is None:
        report.rules = None
        return None, report
    return OperatorFiles(report.rules, roster, routing, stamp), report


def render(report: CheckReport, directory: Path) -> str:
    """The text ``rules check`` prints: one line per problem, then a summary."""
    lines = [str(p) for p in report.problems]
    if report.problems:
        files = {p.file for p in report.problems}
        lines.append(f"{len(report.problems)} problem(s) in {len(files)} file(s); nothing was changed")
    elif report.rules is not None:
        lines.append(f"{directory}: {len(report.rules.rules)} rules valid, hash {report.rules.hash[:12]}")
    return "\n".join(lines)


# --- the checks parse_rule_docs does not make -------------------------------------


def _file_shape(doc: TomlDoc) -> list[Problem]:
    out: list[Problem] = []
    for key in doc.data:
        if key != "rule":
            out.append(doc.problem((key,), "unknown top-level key: a rules file holds only [[rule]] tables"))
    if "rule" not in doc.data:
        out.append(Problem(doc.path, None, "", "holds no [[rule]] tables"))
    elif not isinstance(doc.data["rule"], list):
        out.append(doc.problem(("rule",), "expected [[rule]] tables (double brackets)"))
    return out


def _tables(docs: Iterable[TomlDoc]) -> Iterable[tuple[TomlDoc, int, dict[str, Any]]]:
    for doc in docs:
        for i, table in enumerate(doc.data.get("rule", [])):
            if isinstance(table, dict):
                yield doc, i, table


def _declared_symbols(docs: list[TomlDoc]) -> set[str]:
    return {t["symbol"] for _, _, t in _tables(docs) if isinstance(t.get("symbol"), str)}


def _unknown_requires(docs: list[TomlDoc]) -> list[Problem]:
    """``requires`` naming a symbol no rule declares, at the line of ``requires``.

    A symbol declared by a rule that is broken in another way counts as known: the
    broken rule is the one to report, not every composite that uses it.
    """
    declared = _declared_symbols(docs)
    out: list[Problem] = []
    for doc, i, table in _tables(docs):
        requires = table.get("requires")
        if not isinstance(requires, list):
            continue
        for j, name in enumerate(requires):
            if isinstance(name, str) and name not in declared:
                out.append(
                    Problem(
                        doc.path,
                        doc.line_of(("rule", i, "requires")),
                        f"{_label(i, table)}.requires[{j}]",
                        f"{_UNKNOWN}{name}",
                    )
                )
    return out


def _where(doc: TomlDoc, i: int) -> str:
    return f"{doc.path}:{doc.line_of(('rule', i)) or 0}"


def _label(i: int, table: dict[str, Any]) -> str:
    symbol = table.get("symbol")
    return f"rule[{i}]({symbol})" if isinstance(symbol, str) else f"rule[{i}]"


def _duplicates_among_all(docs: list[TomlDoc]) -> list[Problem]:
    seen: dict[str, str] = {}
    out: list[Problem] = []
    for doc, i, table in _tables(docs):
        symbol = table.get("symbol")
        if not isinstance(symbol, str):
            continue
        if symbol in seen:
            out.append(
                Problem(
                    doc.path,
                    doc.line_of(("rule", i, "symbol")),
                    f"{_label(i, table)}.symbol",
                    f"duplicate symbol; already defined at {seen[symbol]}",
                )
            )
        else:
            seen[symbol] = _where(doc, i)
    return out


def _reserved(docs: list[TomlDoc]) -> list[Problem]:
    return [
        Problem(
            doc.path,
            doc.line_of(("rule", i, "symbol")),
            f"{_label(i, table)}.symbol",
            f"{MODEL_SYMBOL} is the learned model's symbol; choose another name",
        )
        for doc, i, table in _tables(docs)
        if table.get("symbol") == MODEL_SYMBOL
    ]


def _cycles(docs: list[TomlDoc]) -> list[Problem]:
    """Composites that require each other (directly or round a loop) never fire."""
    graph: dict[str, list[str]] = {}
    where: dict[str, tuple[TomlDoc, int, dict[str, Any]]] = {}
    for doc, i, table in _tables(docs):
        symbol, requires = table.get("symbol"), table.get("requires")
        if isinstance(symbol, str) and symbol not in graph:
            graph[symbol] = [r for r in requires if isinstance(r, str)] if isinstance(requires, list) else []
            where[symbol] = (doc, i, table)
    out: list[Problem] = []
    reported: set[str] = set()
    for start in graph:
        path = _find_cycle(graph, start)
        if path is None or start in reported:
            continue
        reported.update(path)
        doc, i, table = where[start]
        out.append(
            Problem(
                doc.path,
                doc.line_of(("rule", i, "requires")),
                f"{_label(i, table)}.requires",
                f"requires form a cycle ({' -> '.join([*path, path[0]])}); these rules can never fire",
            )
        )
    return out


def _find_cycle(graph: dict[str, list[str]], start: str) -> list[str] | None:
    """The symbols on a cycle back to ``start``, or None (iterative DFS, bounded by the graph)."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    visited: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, []):
            if nxt == start:
                return path
            if nxt not in visited and nxt in graph:
                visited.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _unreachable(directory: Path, rules: list[Rule], threshold: float, model_weight: float) -> list[Problem]:
    if any(r.force == "acute" for r in rules):
        return []
    best = sum(r.weight for r in rules if r.weight > 0) + model_weight
    if best >= threshold:
        return []
    return [
        Problem(
            str(directory),
            None,
            "decision.acute_threshold",
            f"no mail can reach the threshold {threshold:g}: all positive weights plus the model "
            f"add up to {best:g}, so nothing would ever be acute",
        )
    ]


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, int | None, str]] = set()
    out: list[Problem] = []
    for p in problems:
        key = (p.file, p.line, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
