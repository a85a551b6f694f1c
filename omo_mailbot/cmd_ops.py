"""Subcommands for running the service: benchmarks, purge, live checks."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_purge(args: Any, cfg: Any) -> int:
    """Remove mail content older than privacy.retention_days (see omo_mailbot.purge)."""
    from datetime import UTC, datetime

    from . import db
    from .purge import purge
    from .service import open_database

    engine, sessions = open_database(cfg)
    db.require_current_schema(engine)
    report = purge(sessions, cfg.privacy.retention_days, datetime.now(UTC), dry_run=args.dry_run)
    print(report.describe())
    engine.dispose()
    return 0


def cmd_bench(args: Any, cfg: Any) -> int:
    """The benchmarks (bench/run.py in a checkout): throw-away Dovecot + SMTP sink, table + JSON."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "run.py").is_file():
        print("bench/ is not part of this installation; run `omo-mailbot bench` from a checkout", file=sys.stderr)
        return 2
    passed = list(args.bench_args)
    if passed[:1] == ["--"]:
        passed = passed[1:]
    return subprocess.call([sys.executable, "-m", "bench.run", *passed], cwd=root)


def register(sub: Any, rules_sub: Any) -> None:
    """Add this module's subcommands to the parser."""
    pu = sub.add_parser("purge", help="remove mail bodies older than privacy.retention_days (AVG/GDPR)")
    pu.add_argument("--dry-run", action="store_true", help="only count what would be purged")
    pu.set_defaults(func=cmd_purge, needs_config=True)
    be = sub.add_parser("bench", help="benchmarks against a throw-away Dovecot (see BENCHMARKS.md)")
    be.add_argument("bench_args", nargs=argparse.REMAINDER, help="passed on, e.g. -- --n 1000 --trials 50")
    be.set_defaults(func=cmd_bench, needs_config=False)
    del rules_sub
