"""Subcommands for operators: backtest and rule reloads."""

from __future__ import annotations

from typing import Any


def register(sub: Any, rules_sub: Any) -> None:
    """Add this module's subcommands to the parser (none yet)."""
    del sub, rules_sub
