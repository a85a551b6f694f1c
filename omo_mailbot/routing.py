"""Routing: which topics a mail is about, and who may take each topic.

``roster/routing.toml`` holds topic signals written in the rule language of
:mod:`omo_mailbot.rules` (``[[rule]]`` tables: named symbols with matchers),
and ``[[topic]]`` tables that group signals and name who may take the topic::

    [[rule]]
    symbol = "WIND_FARM"
    description = "Mentions a wind farm or wind turbines"
    words = ["windpark", "windturbine*", "windmolen*"]

    [[topic]]
    name = "energy"                        # what roster persons list under topics
    title = "Energie en windparken"        # what contact persons read in the digest
    signals = ["WIND_FARM"]                # the topic applies when any of these fired
    persons = ["anna.devries@minbzk.example"]   # eligible persons (roster addresses)
    organisations = ["BZK"]                # and/or every roster person of these organisations

A person is eligible for a topic when the topic names them or their
organisation, or when they list the topic in the roster. Validation names
file, line and key: a signal that is not a rule, a person not on the roster,
an organisation nobody belongs to, a roster topic that does not exist. The
matching itself is the rule engine's; this module only groups its hits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import tomlfile
from .errors import ConfigError, Problem
from .mail import ParsedMail
from .roster import ORGANISATIONS, Roster
from .rules import Hit, MatchContext, RuleSet, content_hash, parse_rule_docs
from .tomlfile import KeyPath, TomlDoc

TOPIC_KEYS = frozenset({"name", "title", "signals", "persons", "organisations"})


@dataclass(frozen=True)
class Topic:
    name: str
    title: str
    signals: tuple[str, ...]
    persons: tuple[str, ...] = ()
    organisations: tuple[str, ...] = ()


@dataclass(frozen=True)
class TopicMatch:
    """One topic that applies to a mail, with the signals that made it apply."""

    topic: Topic
    hits: tuple[Hit, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic.name,
            "title": self.topic.title,
            "signals": [
                {"symbol": h.symbol, "description": h.description, "matched": list(h.matched)} for h in self.hits
            ],
        }

    def why(self) -> str:
        parts = [f"{h.symbol} ({', '.join(repr(m) for m in list(dict.fromkeys(h.matched))[:2])})" for h in self.hits]
        return f"{self.topic.title}: {'; '.join(parts)}"


@dataclass(frozen=True)
class Routing:
    topics: tuple[Topic, ...]
    rules: RuleSet

    def topic(self, name: str) -> Topic | None:
        return next((t for t in self.topics if t.name == name), None)

    def match(self, ctx: MatchContext) -> list[TopicMatch]:
        """The topics whose signals fired, in file order."""
        hits = {h.symbol: h for h in self.rules.evaluate(ctx)}
        out: list[TopicMatch] = []
        for topic in self.topics:
            fired = tuple(hits[s] for s in topic.signals if s in hits)
            if fired:
                out.append(TopicMatch(topic, fired))
        return out

    def match_mail(self, mail: ParsedMail, new_text: str, quoted: str = "") -> list[TopicMatch]:
        return self.match(match_context(mail, new_text, quoted))

    def eligible(self, topic: Topic, roster: Roster) -> list[str]:
        """Roster addresses that may take ``topic``, in roster order."""
        return [
            p.address
            for p in roster.persons
            if p.address in topic.persons or p.organisation in topic.organisations or topic.name in p.topics
        ]


def match_context(mail: ParsedMail, new_text: str, quoted: str = "") -> MatchContext:
    """The same view of a mail that the decision rules get."""
    return MatchContext(
        subject=mail.subject,
        body=new_text,
        quoted=quoted,
        headers=mail.headers,
        sender_domain=mail.from_.domain.lower() if mail.from_ else "",
    )


def _names(doc: TomlDoc, key: KeyPath, value: Any, problems: list[Problem]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(doc.problem(key, "expected an array of strings"))
        return []
    return [v.strip() for v in value]


def routing_from_doc(doc: TomlDoc, roster: Roster, content: str = "") -> Routing:
    problems: list[Problem] = []
    for top in doc.data:
        if top not in ("rule", "topic"):
            problems.append(doc.problem((top,), "unknown key (known here: rule, topic)"))
    rules = parse_rule_docs([doc], problems)
    for i, table in enumerate(doc.data.get("rule", []) if isinstance(doc.data.get("rule"), list) else []):
        if isinstance(table, dict) and "force" in table:
            problems.append(
                doc.problem(("rule", i, "force"), "routing signals choose topics, not labels; remove force")
            )
    symbols = {r.symbol for r in rules}
    known = set(roster.addresses)
    organisations_present = {p.organisation for p in roster.persons}
    topics: list[Topic] = []
    raw_topics = doc.data.get("topic", [])
    if not isinstance(raw_topics, list) or not raw_topics:
        problems.append(doc.problem(("topic",), "expected one or more [[topic]] tables"))
        raw_topics = []
    seen: set[str] = set()
    for i, table in enumerate(raw_topics):
        key: KeyPath = ("topic", i)
        if not isinstance(table, dict):
            problems.append(doc.problem(key, "expected a [[topic]] table"))
            continue
        before = len(problems)
        for unknown in table:
            if unknown not in TOPIC_KEYS:
                known_keys = ", ".join(sorted(TOPIC_KEYS))
                problems.append(doc.problem((*key, unknown), f"unknown key (known here: {known_keys})"))
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(doc.problem((*key, "name"), "expected a topic name"))
            name = ""
        elif name in seen:
            problems.append(doc.problem((*key, "name"), f"duplicate topic {name}"))
        seen.add(str(name))
        title = table.get("title", name)
        if not isinstance(title, str):
            problems.append(doc.problem((*key, "title"), "expected a string"))
            title = str(name)
        signals = _names(doc, (*key, "signals"), table.get("signals"), problems)
        if not signals and len(problems) == before:
            problems.append(doc.problem((*key, "signals"), "expected at least one rule symbol"))
        for j, symbol in enumerate(signals):
            if symbol not in symbols:
                problems.append(doc.problem((*key, "signals", j), f"unknown signal {symbol}: no [[rule]] has it"))
        persons = [p.lower() for p in _names(doc, (*key, "persons"), table.get("persons"), problems)]
        for j, address in enumerate(persons):
            if address not in known:
                problems.append(doc.problem((*key, "persons", j), f"{address} is not a person on the roster"))
        organisations = _names(doc, (*key, "organisations"), table.get("organisations"), problems)
        for j, org in enumerate(organisations):
            if org not in ORGANISATIONS:
                problems.append(
                    doc.problem((*key, "organisations", j), f"expected one of {', '.join(ORGANISATIONS)}, got {org!r}")
                )
            elif org not in organisations_present:
                problems.append(doc.problem((*key, "organisations", j), f"nobody on the roster belongs to {org}"))
        if len(problems) == before:
            topics.append(Topic(str(name), title, tuple(signals), tuple(persons), tuple(organisations)))
    topic_names = {t.name for t in topics} | seen
    for person in roster.persons:
        for t in person.topics:
            if t not in topic_names:
                file, _, line = person.source.rpartition(":")
                problems.append(
                    Problem(file, int(line) or None, f"person({person.address}).topics", f"unknown topic {t!r}")
                )
    if problems:
        raise ConfigError(problems)
    return Routing(tuple(topics), RuleSet(tuple(rules), content or doc.path, (doc.path,)))


def load_routing(path: Path, roster: Roster) -> Routing:
    """Load and validate the routing file against ``roster``; raise :class:`ConfigError` with every problem."""
    doc = tomlfile.load(path)
    return routing_from_doc(doc, roster, content_hash([path]))
