"""Subcommands for operators: ``rules check`` (every problem at once) and ``backtest``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from .config import Config
from .mail import ParsedMail
from .rulecheck import OperatorFiles, check_operator_files, render
from .verdict import Decider


def register(sub: Any, rules_sub: Any) -> None:
    """Add ``backtest``, ``explain --rules`` and the roster/routing options of ``rules check``."""
    explain = sub.choices.get("explain")
    if explain is not None:
        explain.add_argument("--rules", metavar="DIR", help="decide with the candidate rules in DIR instead")
    check = rules_sub.choices.get("check")
    if check is not None:
        check.add_argument("--roster", metavar="FILE", help="roster file to check (default: roster.roster_file)")
        check.add_argument("--routing", metavar="FILE", help="routing file to check (default: roster.routing_file)")

    bt = sub.add_parser(
        "backtest",
        help="decide stored mail again with candidate rules (and model) and show what would change; touches nothing",
    )
    bt.add_argument("--rules", required=True, metavar="DIR", help="the candidate rules directory")
    bt.add_argument("--model", metavar="PATH", help="a candidate model file (default: the live model)")
    bt.add_argument("--roster", metavar="FILE", help="a candidate roster file (default: the live one)")
    bt.add_argument("--routing", metavar="FILE", help="a candidate routing file (default: the live one)")
    bt.add_argument("--since", metavar="DATE", type=parse_since, help="only mail received from DATE (YYYY-MM-DD)")
    bt.add_argument("--json", action="store_true", help="one JSON document with every change")
    bt.add_argument("--limit", type=int, default=50, help="mails listed per section in the text report")
    bt.set_defaults(func=cmd_backtest, needs_config=False)


def parse_since(text: str) -> datetime:
    """``2026-11-01`` (midnight UTC) or a full ISO timestamp; naive times are UTC."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD) or ISO timestamp: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _operator_files(
    cfg: Config, rules_dir: Path, roster: str | None, routing: str | None
) -> tuple[OperatorFiles | None, Any]:
    return check_operator_files(
        rules_dir,
        Path(roster) if roster else cfg.resolve(cfg.roster.roster_file),
        Path(routing) if routing else cfg.resolve(cfg.roster.routing_file),
        threshold=cfg.decision.acute_threshold,
        model_weight=cfg.decision.model_weight,
    )


def cmd_rules_check(args: argparse.Namespace, cfg: Config) -> int:
    """``rules check [DIR]``: every problem in the rules, roster and routing files; 1 when any."""
    directory = Path(args.dir) if args.dir else cfg.resolve(cfg.paths.rules_dir)
    files, report = _operator_files(cfg, directory, getattr(args, "roster", None), getattr(args, "routing", None))
    print(render(report, directory))
    if files is None:
        return 1
    if files.roster is not None:
        print(f"{files.roster.path}: {len(files.roster.persons)} persons, {len(files.roster.shifts)} duty shifts valid")
    if files.routing is not None:
        print(f"{files.routing.rules.files[0]}: {len(files.routing.topics)} topics valid")
    return 0


def cmd_backtest(args: argparse.Namespace, cfg: Config) -> int:
    from . import classifier, db
    from .backtest import Side, TextProgress, render_text, run_backtest
    from .service import build_decider, load_model, open_database

    candidate_files, report = _operator_files(cfg, Path(args.rules), args.roster, args.routing)
    if candidate_files is None:
        print("the candidate does not pass `rules check`; nothing was decided:", file=sys.stderr)
        for problem in report.problems:
            print(problem, file=sys.stderr)
        return 1
    live_files, live_report = _operator_files(cfg, cfg.resolve(cfg.paths.rules_dir), None, None)
    if live_files is None:
        for problem in live_report.problems:
            print(problem, file=sys.stderr)
        print("the live rules do not pass `rules check`; fix them first", file=sys.stderr)
        return 2
    engine, _ = open_database(cfg)
    try:
        db.require_current_schema(engine)
        live_model = load_model(cfg)
        candidate_model = classifier.load(Path(args.model)) if args.model else live_model

        def side(files: OperatorFiles, model: classifier.TrainedModel) -> Side:
            people = files.roster.addresses if files.roster else None
            decider = build_decider(cfg, rules=files.rules, model=model, roster_addresses=people)
            return Side(decider, files.routing, files.roster)

        result = run_backtest(
            # read beside the service: on SQLite a writer session would hold the write lock for the whole run
            db.session_factory(db.reader(engine)),
            side(live_files, live_model),
            side(candidate_files, candidate_model),
            since=args.since,
            progress=TextProgress(sys.stderr),
        )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    else:
        print(render_text(result, limit=args.limit))
    return 0


def routing_explainer(cfg: Config, decider: Decider) -> Callable[[ParsedMail], dict[str, Any]]:
    """For ``explain``: each mail's topics, who may take it and who would (reads, never writes).

    The assignee needs the database (open cases per person); without one, or with an
    outdated schema, only topics and eligible people are shown. A SQLite file that
    does not exist is not created.
    """
    from sqlalchemy.engine import make_url

    from . import db
    from .errors import ConfigError
    from .routeview import routing_record
    from .service import load_roster_and_routing, open_database

    try:
        roster, routing = load_roster_and_routing(cfg)
    except ConfigError as exc:
        broken = {"routed": False, "why": f"roster or routing has {len(exc.problems)} problem(s): run `rules check`"}
        return lambda _mail: broken
    sessions = None
    url = make_url(cfg.database.url)
    if not url.drivername.startswith("sqlite") or (url.database and Path(url.database).exists()):
        try:
            engine, sessions = open_database(cfg)
            db.require_current_schema(engine)
        except Exception:  # no database to read (or an outdated one): topics and people only
            sessions = None
    today = datetime.now(cfg.digest.zone).date()

    def route(mail: ParsedMail) -> dict[str, Any]:
        decision = decider.decide(mail)
        if sessions is None:
            return routing_record(mail, decision, roster, routing, None, today)
        with sessions() as session:
            return routing_record(mail, decision, roster, routing, session, today)

    return route
