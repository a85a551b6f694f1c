"""The ``omo-mailbot`` command line: the composition root and the only place that exits.

Every deliberate error (a wrong config, an outdated schema, a refused login)
is printed as a short message with what to do, and the exit status says what
kind of failure it was: 0 fine, 1 a check found problems, 2 usage or
configuration error, 3 the mailbox refused us, 4 another instance runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from . import __version__, db
from .config import Config, default_config, load_config
from .errors import (
    AuthenticationFailed,
    ConfigError,
    FolderMissing,
    InstanceLocked,
    ModelError,
    OmoError,
    SchemaOutdated,
)

log = logging.getLogger("omo_mailbot")
Handler = Callable[[argparse.Namespace, Config], int]
# Modules that add subcommands: each has register(sub, rules_sub) adding parsers whose
# defaults set func (a Handler) and needs_config (whether --config must exist).
EXTENSIONS = ("cmd_cases", "cmd_operators", "cmd_ops")


def _config(args: argparse.Namespace, *, required: bool) -> Config:
    path = Path(args.config)
    if path.exists() or required:
        return load_config(path)
    print(f"note: {path} not found; using built-in defaults (see config.example.toml)", file=sys.stderr)
    return default_config(str(Path.cwd()))


def _roster_addresses(cfg: Config) -> list[str] | None:
    """Contact persons are never auto-answered; a dry run must know them as the service does."""
    from .service import load_roster_and_routing

    roster, _ = load_roster_and_routing(cfg)
    return list(roster.addresses) if roster else None


# --- commands ---------------------------------------------------------------


def cmd_db(args: argparse.Namespace, cfg: Config) -> int:
    if args.action == "upgrade":
        db.upgrade(cfg.database.url)
        print(f"database is at revision {db.head_revision(cfg.database.url)}")
        return 0
    engine = db.make_engine(cfg.database.url)
    current, head = db.current_revision(engine), db.head_revision(cfg.database.url)
    print(
        f"current: {current or '(empty)'}  head: {head}"
        + ("" if current == head else "  -> run `omo-mailbot db upgrade`")
    )
    return 0 if current == head else 1


def _print_run_table(outcomes: Sequence[Any], cfg: Config) -> None:
    from sqlalchemy import select

    from .models import Message
    from .service import open_database

    _, sessions = open_database(cfg)
    subjects: dict[int, str] = {}
    with sessions() as s:
        ids = [o.message_db_id for o in outcomes if o.message_db_id]
        for mid, subject in s.execute(select(Message.id, Message.subject).where(Message.id.in_(ids))):
            subjects[mid] = subject or ""
    print(f"{'uid':>4}  {'status':<12} {'label':<11} {'case':<13} {'reply':<5}  subject / why")
    print("-" * 100)
    for o in outcomes:
        subject = subjects.get(o.message_db_id or 0, "")[:48]
        why = ""
        if o.needs_human:
            why = f"  [needs a human: {o.needs_human[:60]}]"
        elif o.label == "acute" and not o.replied:
            why = f"  [no reply: {(o.blocked_by or '')[:60]}]"
        elif o.label == "automated":
            why = f"  [{(o.blocked_by or '')[:60]}]"
        print(
            f"{o.uid:>4}  {o.status:<12} {o.label or '-':<11} {o.case_reference or '-':<13} "
            f"{'yes' if o.replied else '-':<5}  {subject}{why}"
        )
    counts: dict[str, int] = {}
    for o in outcomes:
        key = o.label or o.status
        counts[key] = counts.get(key, 0) + 1
    replies = sum(1 for o in outcomes if o.replied)
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    print("-" * 100)
    print(f"{len(outcomes)} mails: {summary}; {replies} auto-replies queued")


class _Progress:
    """`run --once` on a long backlog: a running count on the terminal (not in pipes or logs)."""

    def __init__(self) -> None:
        self.count = 0
        self.labels: dict[str, int] = {}
        self.live = sys.stderr.isatty()

    def outcome(self, outcome: Any) -> None:
        self.count += 1
        key = outcome.label or outcome.status
        self.labels[key] = self.labels.get(key, 0) + 1
        if self.live and self.count % 10 == 0:
            summary = ", ".join(f"{v} {k}" for k, v in sorted(self.labels.items()))
            print(f"\r  {self.count} mails processed ({summary})", end="", file=sys.stderr, flush=True)

    def polled(self) -> None:
        if self.live and self.count >= 10:
            print(file=sys.stderr)


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from .service import ServiceState, build_service

    state = ServiceState(keep_outcomes=args.once)
    if args.once:
        state.observers.append(_Progress())
    with db.single_instance_lock(cfg.database.url):
        service, engine = build_service(cfg, state=state)

        def _stop(signum: int, _frame: Any) -> None:
            log.info("stopping", extra={"signal": signal.Signals(signum).name})
            state.stop.set()
            state.outbox_wake.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        # SIGHUP: check rules/ and the roster now and swap them in when valid (see reload.py)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: state.reload.set())
        if args.once:
            service.run_once()
            _print_run_table(state.outcomes, cfg)
            if cfg.delivery.kind == "files":
                print(f"outgoing mail written to {cfg.resolve(cfg.delivery.outdir)}")
        else:
            from .ops import start_operations  # metrics + /healthz, systemd READY/WATCHDOG/STOPPING

            ops = start_operations(cfg, service, engine)
            log.info("service starting", extra={"instance": cfg.service.instance_name, "version": __version__})
            try:
                service.run_forever()
            finally:
                ops.close()
            log.info("service stopped")
        engine.dispose()
    return 0


def cmd_explain(args: argparse.Namespace, cfg: Config) -> int:
    from .cmd_operators import routing_explainer
    from .corpus import iter_eml
    from .explain import explain_mail, render_text
    from .mail import parse
    from .routeview import render_lines as routing_lines
    from .rules import load_rules
    from .service import build_decider, open_database

    if args.message_id:  # first: an empty or missing database says so, instead of "no such table"
        engine, sessions = open_database(cfg)
        db.require_current_schema(engine)
    candidate = getattr(args, "rules", None)  # explain --rules DIR: a dry run with candidate rules (cmd_operators)
    decider = build_decider(
        cfg, rules=load_rules(Path(candidate)) if candidate else None, roster_addresses=_roster_addresses(cfg)
    )
    route = routing_explainer(cfg, decider)  # topics, who may take it, who would (cmd_operators)
    records: list[dict[str, Any]] = []
    if args.message_id:
        from sqlalchemy import select

        from .models import Message, Verdict

        with sessions() as s:
            row = (
                s.execute(
                    select(Message).where(
                        (Message.message_id_header == args.message_id)
                        | (Message.message_id_header == f"<{args.message_id.strip('<>')}>")
                    )
                )
                .scalars()
                .first()
            )
            if row is None:
                print(f"no stored mail with Message-ID {args.message_id}", file=sys.stderr)
                return 1
            if row.raw is None:
                when = f" on {row.purged_at:%Y-%m-%d}" if row.purged_at else ""
                print(f"stored message {row.id}: its body was purged{when}; only the verdict is kept", file=sys.stderr)
                return 1
            stored = s.execute(select(Verdict).where(Verdict.message_id == row.id)).scalar_one_or_none()
            mail = parse(row.raw)
            record = explain_mail(decider, mail)
            record["routing"] = route(mail)
            record["path"] = f"stored message {row.id}"
            if stored is not None:
                record["stored_verdict"] = {
                    "label": stored.label,
                    "score": stored.score,
                    "rules_hash": stored.rules_hash,
                    "model_version": stored.model_version,
                    "decided_at": stored.decided_at.isoformat(),
                }
            records.append(record)
    for path in iter_eml([Path(p) for p in args.paths]):
        try:
            mail = parse(path.read_bytes())
            record = explain_mail(decider, mail)
            record["routing"] = route(mail)
        except (OSError, OmoError) as exc:
            record = {"path": str(path), "error": f"{type(exc).__name__}: {exc}"}
        else:
            record = {"path": str(path), **record}
        records.append(record)
        if args.json:
            print(json.dumps(record, ensure_ascii=False), flush=True)
    if not args.json:
        for record in records:
            if "error" in record:
                print(f"== {record['path']}\n   error: {record['error']}")
            else:
                print(render_text(record))
                print("\n".join(routing_lines(record.get("routing") or {"why": "not computed"})))
                if "stored_verdict" in record:
                    sv = record["stored_verdict"]
                    print(
                        f"   stored:    {sv['label']} (score {sv['score']:+.2f}) at {sv['decided_at']} with rules "
                        f"{sv['rules_hash'][:12]}, model {sv['model_version']}"
                    )
    elif args.message_id:
        print(json.dumps(records[0], ensure_ascii=False))
    return 0


def cmd_train(args: argparse.Namespace, cfg: Config) -> int:
    import time

    from .service import open_database, train_model

    sessions = None
    if args.with_relabels:
        engine, sessions = open_database(cfg)
        db.require_current_schema(engine)
    t0 = time.perf_counter()
    model = train_model(cfg, sessions)
    took = time.perf_counter() - t0
    print(
        f"trained on {model.meta['n_train']} mails ({model.meta['n_acute']} acute) in {took:.1f} s; "
        f"model {model.version} written to {cfg.resolve(cfg.paths.model_file)}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace, cfg: Config) -> int:
    from .evaluate import run_evaluation

    return run_evaluation(cfg, Path(args.out), folds=args.folds, plot=not args.no_plot)


def cmd_preview_reply(args: argparse.Namespace, cfg: Config) -> int:
    from datetime import UTC, datetime

    from . import autoreply
    from .mail import parse
    from .service import build_calendar, build_decider
    from .templating import Templates
    from .workdays import format_day

    raw = Path(args.path).read_bytes()  # first: a wrong path is said at once, before the model loads
    decider = build_decider(cfg, roster_addresses=_roster_addresses(cfg))
    mail = parse(raw)
    decision = decider.decide(mail)
    if not decision.auto_reply or decision.guard.reply_to is None:
        print(f"no auto-reply: {decision.auto_reply_blocked_by}")
        return 0
    now = datetime.now(UTC)
    day = format_day(build_calendar(cfg).first_digest_day(now, cfg.digest.zone, cfg.digest.at), decision.language)
    raw, _ = autoreply.build_reply(
        Templates(cfg.resolve(cfg.paths.templates_dir)),
        cfg.smtp,
        cfg.autoreply,
        mail,
        decision,
        decision.guard.reply_to,
        "OMO-0000-0000 (preview)",
        day,
        now,
    )
    sys.stdout.write(raw.decode("utf-8", "replace"))
    return 0


def cmd_check_config(args: argparse.Namespace, cfg: Config) -> int:
    from .rules import load_rules
    from .service import load_roster_and_routing
    from .templating import Templates

    load_rules(cfg.resolve(cfg.paths.rules_dir))
    Templates(cfg.resolve(cfg.paths.templates_dir))
    roster, routing = load_roster_and_routing(cfg)
    files = ["configuration", "rules", "templates"] + ["roster"] * bool(roster) + ["routing"] * bool(routing)
    print(f"{args.config}: {', '.join(files[:-1])} and {files[-1]} are valid")
    if args.live:
        from .live_check import live_check

        return live_check(cfg)
    return 0


def cmd_rules_check(args: argparse.Namespace, cfg: Config) -> int:
    from .cmd_operators import cmd_rules_check as check

    return check(args, cfg)  # every problem in rules, roster and routing at once (see rulecheck.py)


# --- parser -----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="omo-mailbot",
        description="Reads the Omo@minbzk.nl mailbox: tells acute unrest from preparation questions, answers "
        "acute mail with guidance at once, never answers a machine, and queues cases for contact persons.",
        epilog="Exit status: 0 fine, 1 a check found problems, 2 configuration or usage error, "
        "3 the mailbox refused the login, 4 another instance is running.",
    )
    p.add_argument("--config", default="config.toml", help="TOML config file (default ./config.toml)")
    p.add_argument("--version", action="version", version=f"omo-mailbot {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the service: IDLE/poll, decide, answer, send")
    run.add_argument("--once", action="store_true", help="one pass: fetch all new mail, decide, send, exit")
    run.set_defaults(func=cmd_run, needs_config=True)

    ex = sub.add_parser("explain", help="dry run of the decision for .eml files or folders")
    ex.add_argument("paths", nargs="*")
    ex.add_argument("--json", action="store_true", help="one JSON object per message per line")
    ex.add_argument("--message-id", help="explain a stored mail by its Message-ID")
    ex.set_defaults(func=cmd_explain, needs_config=False)

    dbp = sub.add_parser("db", help="database schema")
    dbp.add_argument("action", choices=["upgrade", "current"])
    dbp.set_defaults(func=cmd_db, needs_config=False)

    tr = sub.add_parser("train", help="train the classifier on the seed corpus (with --with-relabels: and relabels)")
    tr.add_argument("--with-relabels", action="store_true", help="also use relabels stored in the database")
    tr.set_defaults(func=cmd_train, needs_config=False)

    ev = sub.add_parser("evaluate", help="cross-validation and test-split figures, as text and a PNG plot")
    ev.add_argument("--out", default="evaluation", help="folder for report.txt and the plot")
    ev.add_argument("--folds", type=int, default=5)
    ev.add_argument("--no-plot", action="store_true")
    ev.set_defaults(func=cmd_evaluate, needs_config=False)

    pr = sub.add_parser("preview-reply", help="render the reply a mail would get, or say why none")
    pr.add_argument("path")
    pr.set_defaults(func=cmd_preview_reply, needs_config=False)

    cc = sub.add_parser("check-config", help="validate config, rules and templates")
    cc.add_argument("--live", action="store_true", help="also log in to IMAP and SMTP")
    cc.set_defaults(func=cmd_check_config, needs_config=True)

    rules = sub.add_parser("rules", help="operator rules")
    rsub = rules.add_subparsers(dest="rules_action", required=True)
    rc = rsub.add_parser("check", help="validate rules, routing and roster files")
    rc.add_argument("dir", nargs="?")
    rc.set_defaults(func=cmd_rules_check, needs_config=False)
    for module in EXTENSIONS:
        importlib.import_module(f"omo_mailbot.{module}").register(sub, rsub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from . import logs

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = _config(args, required=bool(args.needs_config))
        logs.setup(cfg.service.log_level, cfg.service.log_format)
        result: int = args.func(args, cfg)
        return result
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1 if args.command in ("rules", "check-config") else 2
    except (SchemaOutdated, ModelError, FolderMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AuthenticationFailed as exc:
        print(f"error: {exc}; giving up after the configured number of attempts", file=sys.stderr)
        return 3
    except InstanceLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except OmoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that is not there, a folder that cannot be written: not a bug to trace
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        # the database is unreachable or not what we expect; the cause in one line, not a traceback
        cause = getattr(exc, "orig", None) or exc
        print(
            f"error: the database cannot be used: {type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
