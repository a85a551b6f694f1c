"""Reading operator TOML files so that every mistake can name its file and line.

``tomllib`` on Python 3.11 reports syntax errors only inside its message text and
knows nothing of lines once parsed. This module parses the file and builds a
map from key paths (``("imap", "port")``, ``("rule", 3, "weight")``) to the line
that defines them, so validators can report ``file:line: key: message``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import Problem

KeyPath = tuple[str | int, ...]

_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")
_SYNTAX_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def _split_key(text: str) -> list[str]:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


@dataclass
class TomlDoc:
    """A parsed TOML file and where each key was written."""

    path: str
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key: KeyPath) -> int | None:
        """The line of ``key``, or of its nearest ancestor that has one."""
        probe = tuple(key)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return None

    def problem(self, key: KeyPath, message: str) -> Problem:
        return Problem(self.path, self.line_of(key), dotted(key), message)


def dotted(key: KeyPath) -> str:
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _index_lines(text: str) -> dict[KeyPath, int]:
    lines: dict[KeyPath, int] = {}
    counters: dict[tuple[str, ...], int] = {}
    prefix: KeyPath = ()
    in_multiline: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if raw.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        m = _ARRAY_TABLE.match(raw)
        if m:
            name = tuple(_split_key(m.group(1)))
            idx = counters.get(name, 0)
            counters[name] = idx + 1
            prefix = (*name, idx)
            lines.setdefault(name, number)
            lines[prefix] = number
            continue
        m = _TABLE.match(raw)
        if m:
            name = tuple(_split_key(m.group(1)))
            # a sub-table of the latest array-of-tables entry keeps its index
            resolved: list[str | int] = []
            for i, part in enumerate(name):
                resolved.append(part)
                head = name[: i + 1]
                if head in counters and i + 1 < len(name):
                    resolved.append(counters[head] - 1)
            prefix = tuple(resolved)
            lines.setdefault(prefix, number)
            continue
        m = _KEY.match(raw)
        if m:
            key = (*prefix, *_split_key(m.group(1)))
            lines.setdefault(key, number)
            rest = raw[m.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_multiline = quote
    return lines


def load(path: Path) -> TomlDoc:
    """Parse ``path``; a syntax error becomes a :class:`Problem` with its line."""
    from .errors import ConfigError

    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(name, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(name, None, "", f"cannot read: {exc}")]) from None
    return parse(text, name)


def parse(text: str, name: str) -> TomlDoc:
    from .errors import ConfigError

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        pos = _SYNTAX_POS.search(msg)
        line = int(pos.group(1)) if pos else None
        clean = _SYNTAX_POS.sub("", msg).strip()
        raise ConfigError([Problem(name, line, "", f"TOML syntax error: {clean}")]) from None
    return TomlDoc(name, data, _index_lines(text))
