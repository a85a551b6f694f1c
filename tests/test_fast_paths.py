"""The hot-path shortcuts found by profiling (BENCHMARKS.md) give exactly what the plain code gives."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from bench.gen import backlog
from omo_mailbot.corpus import examples
from omo_mailbot.mail import parse
from omo_mailbot.rules import MAX_SNIPPETS, MatchContext, Rule, load_rules, phrase_pattern, word_pattern
from omo_mailbot.text import new_text

from .conftest import ROOT


def _seed_texts() -> list[str]:
    out = []
    for ex in examples(ROOT / "corpus" / "seed"):
        mail = parse(ex.path.read_bytes())
        out.append(f"{mail.subject}\n{new_text(mail).new}\n{new_text(mail).quoted}")
    return out


def test_rules_dispatched_on_the_first_letter_match_what_a_plain_alternation_matches():
    rules = load_rules(ROOT / "rules")
    plain: dict[str, re.Pattern[str]] = {}
    for path in sorted((ROOT / "rules").glob("*.toml")):
        for table in tomllib.loads(path.read_text()).get("rule", []):
            alternatives = [word_pattern(w, table.get("inflect", True)) for w in table.get("words", [])]
            alternatives += [phrase_pattern(p) for p in table.get("phrases", [])]
            alternatives += [f"(?:{rx})" for rx in table.get("regex", [])]
            if alternatives:
                plain[table["symbol"]] = re.compile("|".join(alternatives), re.IGNORECASE)
    texts = [*_seed_texts(), "Demonstranten! Vanavond, MORGEN, 's avonds; -bedreigd- @burgemeester", ""]
    checked = 0
    for rule in rules.rules:
        if rule.pattern is None:
            continue
        for text in texts:
            fast = [m.group(0) for m in rule.pattern.finditer(text)]
            assert fast == [m.group(0) for m in plain[rule.symbol].finditer(text)], rule.symbol
            checked += len(fast)
    assert checked > 100  # the corpus does exercise the rules


def _finditer_snippets(rule: Rule, text: str) -> tuple[str, ...]:
    """What a rule's own regex finds, scanned alone: the reference for the shared scan."""
    assert rule.pattern is not None
    return tuple(m.group(0).strip() for m in rule.pattern.finditer(text))[:MAX_SNIPPETS]


def test_one_shared_scan_finds_what_each_rules_own_scan_finds(tmp_path: Path):
    shipped = load_rules(ROOT / "rules")
    (tmp_path / "odd.toml").write_text(
        """
[[rule]]
symbol = "ODD_LETTERS"
description = "words that start outside ASCII, overlap with others, or repeat"
weight = 1
words = ["één", "ſtraat", "kelvin", "demonstratie", "demonstr*", "nu", "morgen"]
phrases = ["'s avonds", "nu al", "voor het gemeentehuis"]

[[rule]]
symbol = "ASCII_ONLY"
description = "plain words that odd letters in the text still match (K is the Kelvin sign, ſ a long s)"
weight = 1
words = ["straat", "kelvin", "istanbul", "*plein", "*weg*"]

[[rule]]
symbol = "SUBJECT_ONLY"
description = "a second scope"
weight = 1
scope = "subject"
words = ["spoed", "nu"]

[[rule]]
symbol = "WITH_REGEX"
description = "a rule with a regex keeps its own scan"
weight = 1
words = ["morgen"]
regex = ['\\\\bnu\\\\s+\\\\d+\\\\s+mensen']
"""
    )
    odd = load_rules(tmp_path)
    assert "WITH_REGEX" not in {r.symbol for scan in odd.scans.values() for r in scan.rules}
    # the shipped words take the lower-case shortcut; a word with a long s must not
    assert all(scan.lowered is not None for scan in shipped.scans.values())
    assert odd.scans["text"].lowered is None and odd.scans["subject"].lowered is not None
    texts = [
        *_seed_texts(),
        *(f"{m.subject}\n{new_text(m).new}" for m in map(parse, backlog(40))),
        "Demonstranten! Vanavond, MORGEN, 's avonds; -bedreigd- @burgemeester",
        "EEN ÉÉN één Één KELVIN \u212aelvin \u017fTRAAT straat İstanbul nu nu nu nu al nu 12 mensen",
        "SPOED: \u017fPOED nu Nu NU, ıstanbul Spoed \u212aelvin: plain letters beside their odd twins",
        "Σ ΣΠΟΕΔ spoed µ demonstratie ÉÉN DEMONSTRANTEN",
        "blokkade op het Marktplein en de Rijksweg, daarna de Hoofdstraat en het wegdek",
        "k\u212aelvin s\u017ftraat KELVİN iſtanbul nU Nu dEMONSTRANTEN st\u017fraat NU-AL 'S AVONDS",
        "(nu) [morgen] -spoed- _spoed_ 1nu nu1 één-twee µnu nuµ",
        "demonstratie demonstraties demonstranten Demonstratie voor het\n gemeentehuis, voor  het gemeentehuis",
        "",
    ]
    compared = 0
    for rules in (shipped, odd):
        for text in texts:
            ctx = MatchContext(subject=text[:40], body=text, quoted="", headers=(), sender_domain="")
            found = rules.shared_scan(ctx)
            for scan in rules.scans.values():
                for rule in scan.rules:
                    expected = _finditer_snippets(rule, ctx.text_for(rule.scope))
                    assert found[rule.symbol] == expected, (rule.symbol, text[:60])
                    compared += len(expected)
    assert compared > 300  # the texts do exercise the rules


_MARKER_LINES = [
    "-----Original Message-----",
    "  ---------- Forwarded message ---------",
    "---------- Doorgestuurd bericht ----------",
    "Begin doorgestuurd bericht:",
    "Begin forwarded message:",
    "Forwarded message:",
    "Op ma 23 nov. 2026 om 21:14 schreef Marco Dijkstra <m.dijkstra@gemeente-voorbeeld.nl>:",
    "Op 3 nov. 2026 heeft Jan Smit het volgende geschreven:",
    "On Mon, 23 Nov 2026 at 21:14, Jan Smit <j@x.nl> wrote:",
    "Am 1. Januar 2026 schrieb Hans:",
    "Le 1 janv. 2026, Pierre a écrit :",
    "Op di 3 nov. 2026 om 14:02 schreef Jan",
    "Van: Secretariaat <s@x.nl>",
    "**From:** Jan",
    " * Verzonden: maandag",
    "Datum: 1-1-2026",
    "Sent: Monday",
    "To: a@b.nl",
    "CC: c@d.nl",
    "Onderwerp: x",
    "Subject: x",
    "Beantwoorden: x",
    "Reply-To: x",
    "> quoted",
    "\u00a0> quoted after a no-break space",
    "-- ",
    "__________",
    "Verzonden vanaf mijn iPhone",
    "Verstuurd met Telefoon",
    "Sent from my iPhone",
    "Get Outlook for iOS",
    "Outlook voor Android downloaden",
    "Met vriendelijke groet,",
    "Vriendelijke groeten",
    "Hartelijke groet",
    "Collegiale groet",
    "Beste groeten,",
    "Warme groet",
    "Mvg",
    "M.v.g.",
    "Groetjes",
    "Gr.",
    "Hartelijke dank alvast",
    "Alvast bedankt",
    "Kind regards,",
    "Best regards",
    "Warm regards",
    "Regards",
    "Best wishes",
    "Cheers",
    "Sincerely",
    "Yours sincerely",
    "Hoogachtend",
    "Disclaimer: this",
    "Dit e-mailbericht is vertrouwelijk",
    "De informatie in dit bericht",
    "This e-mail and any attachments may",
    "Aan dit bericht kunnen geen rechten worden ontleend",
    "No rights can be derived",
    "Indien u dit bericht ten onrechte",
    "If you are not the intended recipient",
    "\u017fent from my phone",
    "\u212aind regards",
    "ſincerely",
]


def test_the_line_prefilters_let_through_every_line_a_marker_matches():
    from omo_mailbot import text

    def history(line: str) -> bool:
        lines = [line, "Verzonden: x", "Aan: y", "Onderwerp: z", "q@x.nl>:"]
        return bool(
            text._SEPARATORS_FORWARD.match(line)
            or text._SEPARATORS_REPLY.match(line)
            or text._REPLY_HEADER.match(line)
            or text._REPLY_HEADER_START.match(line)
            or text._OUTLOOK_FIELD.match(line)
            or text._outlook_block_at(lines, 0)
            or text._wrapped_reply_header_at(lines, 0)
            or line.lstrip().startswith(">")
        )

    def end(line: str) -> bool:
        return bool(text._SIGNATURE.match(line) or text._CLOSING.match(line) or text._DISCLAIMER.match(line))

    lines = list(_MARKER_LINES)
    lines += [variant for line in _MARKER_LINES for variant in (line.upper(), line.lower(), "  \t" + line)]
    for ex in examples(ROOT / "corpus" / "seed"):
        lines += text.body_text(parse(ex.path.read_bytes())).split("\n")
    seen = {"history": 0, "end": 0}
    for line in lines:
        if history(line):
            seen["history"] += 1
            assert text._MAY_START_HISTORY.match(line), line
        if end(line):
            seen["end"] += 1
            assert text._MAY_END_TEXT.match(line), line
    assert seen["history"] > 150 and seen["end"] > 150, seen
