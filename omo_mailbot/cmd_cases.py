"""Subcommands for contact persons and operators: cases and digests.

``cases list|show|assign|close|refer|relabel`` do what the mail commands do
(the same code in :mod:`commands`), recorded in the case history under the
name given with ``--as`` (default: the login name). ``digest --preview DIR``
writes each person's digest as .html and .txt without sending anything;
``digest --send-now`` queues today's digests (still at most one per person
per day) and sends the outbox.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from . import db
from .commands import Refused, apply, find_case
from .config import Config
from .errors import ConfigError, Problem
from .models import Case, CaseEvent, Message
from .roster import Roster


def _now() -> datetime:
    return datetime.now(UTC)


def _roster(cfg: Config) -> Roster:
    from .service import load_roster_and_routing

    roster, _ = load_roster_and_routing(cfg)
    if roster is None:
        raise ConfigError(
            [Problem(str(cfg.resolve(cfg.roster.roster_file)), None, "roster.roster_file", "file not found")]
        )
    return roster


def _sessions(cfg: Config) -> Any:
    from .service import open_database

    engine, sessions = open_database(cfg)
    db.require_current_schema(engine)
    return sessions


def cmd_cases(args: argparse.Namespace, cfg: Config) -> int:
    sessions = _sessions(cfg)
    if args.cases_action == "list":
        return _list(sessions, args)
    if args.cases_action == "show":
        return _show(sessions, args.reference)
    verb, argument = args.cases_action, ""
    if verb == "assign":
        argument = args.address
    elif verb == "close":
        argument = " ".join(args.reason)
    elif verb == "refer":
        argument = " ".join(args.to)
    elif verb == "relabel":
        verb = args.label
    roster = _roster(cfg) if verb == "assign" else None
    actor = args.actor or getpass.getuser()
    with sessions.begin() as s:
        case = find_case(s, args.reference)
        if case is None:
            print(f"no case {args.reference}")
            return 1
        try:
            print(apply(s, case, verb, argument, actor, roster, _now(), cfg.digest.zone))
        except Refused as exc:
            print(f"not done: {exc}")
            return 1
    return 0


def _list(sessions: Any, args: argparse.Namespace) -> int:
    with sessions() as s:
        stmt = select(Case).order_by(Case.id)
        if not args.all:
            stmt = stmt.where(Case.status != "closed")
        if args.unassigned:
            stmt = stmt.where(Case.assignee.is_(None))
        if args.assignee:
            stmt = stmt.where(Case.assignee == args.assignee.lower())
        rows = list(s.execute(stmt).scalars())
    print(f"{'case':<14} {'status':<12} {'label':<11} {'assignee':<34} {'topics':<24} subject")
    for c in rows:
        topics = ",".join(c.topics or [])
        print(
            f"{c.reference:<14} {c.status:<12} {c.label:<11} {(c.assignee or '-'):<34} {topics[:24]:<24} "
            f"{(c.subject or '')[:50]}"
        )
    print(f"{len(rows)} cases")
    return 0


def _show(sessions: Any, reference: str) -> int:
    with sessions() as s:
        case = find_case(s, reference)
        if case is None:
            print(f"no case {reference}")
            return 1
        print(f"{case.reference}  {case.status}  {case.label}")
        print(f"  subject:   {case.subject or ''}")
        print(f"  requester: {case.requester or ''}")
        print(f"  assignee:  {case.assignee or '(unassigned)'}")
        print(f"  topics:    {', '.join(case.topics or []) or '-'}")
        if case.referred_to:
            print(f"  referred:  {case.referred_to}")
        if case.needs_human:
            print(f"  needs a human: {case.needs_human_reason}")
        print("  mails:")
        for m in s.execute(select(Message).where(Message.case_id == case.id).order_by(Message.id)).scalars():
            print(f"    {m.received_at:%Y-%m-%d %H:%M} {m.from_addr or '?'}  {m.subject or ''}")
        print("  history:")
        for e in s.execute(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).scalars():
            print(f"    {e.at:%Y-%m-%d %H:%M} {e.actor:<28} {e.action:<14} {e.detail or ''}")
    return 0


def cmd_digest(args: argparse.Namespace, cfg: Config) -> int:
    from .outbox import OutboxWorker
    from .service import build_digests, build_mailer
    from .templating import Templates

    sessions = _sessions(cfg)
    runner = build_digests(cfg, sessions, _roster(cfg), Templates(cfg.resolve(cfg.paths.templates_dir)), _now)
    if args.preview:
        written = runner.preview(Path(args.preview))
        print(f"{len(written) // 2} digests written to {args.preview} (.html and .txt; nothing sent)")
        return 0
    report = runner.run(force=True)
    for address, why in report.skipped:
        print(f"skipped {address}: {why}")
    worker = OutboxWorker(sessions, build_mailer(cfg), cfg.smtp, holder=f"{cfg.service.instance_name}-cli", clock=_now)
    sent = 0
    for _ in range(100):
        stats = worker.run_once()
        sent += stats.sent
        if stats.sent + stats.retried + stats.failed == 0:
            break
    worker.mailer.close()
    print(f"{len(report.sent)} digests queued for {report.day}; {sent} mails sent from the outbox")
    return 0


def register(sub: Any, rules_sub: Any) -> None:
    """Add ``cases`` and ``digest`` to the parser."""
    del rules_sub
    cases = sub.add_parser("cases", help="list, show and act on cases (as the mail commands do)")
    csub = cases.add_subparsers(dest="cases_action", required=True)
    ls = csub.add_parser("list", help="open cases (--all for closed ones too)")
    ls.add_argument("--all", action="store_true")
    ls.add_argument("--unassigned", action="store_true")
    ls.add_argument("--assignee")
    show = csub.add_parser("show", help="one case with its mails and history")
    show.add_argument("reference")
    assign = csub.add_parser("assign", help="give a case to a contact person on the roster")
    assign.add_argument("reference")
    assign.add_argument("address")
    close = csub.add_parser("close", help="close a case, with a reason")
    close.add_argument("reference")
    close.add_argument("reason", nargs="*")
    refer = csub.add_parser("refer", help="refer a case to an expert or team")
    refer.add_argument("reference")
    refer.add_argument("to", nargs="+")
    relabel = csub.add_parser("relabel", help="correct the label (training data for the classifier)")
    relabel.add_argument("reference")
    relabel.add_argument("label", choices=["acute", "preparation"])
    for p in (assign, close, refer, relabel):
        p.add_argument("--as", dest="actor", help="who acts (recorded in the history; default: login name)")
    cases.set_defaults(func=cmd_cases, needs_config=False)

    dg = sub.add_parser("digest", help="the daily digest: preview to files, or send today's now")
    mode = dg.add_mutually_exclusive_group(required=True)
    mode.add_argument("--preview", metavar="DIR", help="write each person's digest as .html and .txt; send nothing")
    mode.add_argument("--send-now", action="store_true", help="queue today's digests (once per person) and send")
    dg.set_defaults(func=cmd_digest, needs_config=False)
