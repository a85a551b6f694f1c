"""The labelled seed corpus in corpus/seed/: ``<batch>/labels.csv`` next to the .eml files.

``labels.csv`` has the columns ``file,label,split,lang,kind``; ``split`` is
``train`` or ``test``, and the test split is never used for training.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, Problem

LABELS = ("acute", "preparation")


@dataclass(frozen=True)
class Example:
    path: Path
    label: str
    split: str
    lang: str
    kind: str


def examples(root: Path) -> list[Example]:
    """Every labelled example under ``root``, in a stable order; raise on a broken labels file."""
    problems: list[Problem] = []
    out: list[Example] = []
    for labels in sorted([*root.glob("labels.csv"), *root.glob("*/labels.csv")]):
        with labels.open(encoding="utf-8", newline="") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                name, label, split = row.get("file", ""), row.get("label", ""), row.get("split", "")
                path = labels.parent / name
                if label not in LABELS:
                    problems.append(
                        Problem(str(labels), line, "label", f"expected acute or preparation, got {label!r}")
                    )
                elif split not in ("train", "test"):
                    problems.append(Problem(str(labels), line, "split", f"expected train or test, got {split!r}"))
                elif not path.is_file():
                    problems.append(Problem(str(labels), line, "file", f"{name} does not exist"))
                else:
                    out.append(Example(path, label, split, row.get("lang", "nl"), row.get("kind", "")))
    if problems:
        raise ConfigError(problems)
    return out


def iter_eml(paths: list[Path]) -> Iterator[Path]:
    """Files to read from a list of files and folders (folders: every regular file, sorted)."""
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            yield p
