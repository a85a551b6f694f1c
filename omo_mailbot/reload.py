"""Reload rules and roster without a restart, and never swap in a broken version.

:class:`RuleReloader` watches the operators' files (``rules/*.toml``, the roster
and the routing file) by a content hash, polled every few seconds, and checks
at once when woken (the service wakes it on SIGHUP). A changed version is
checked as a whole with :func:`rulecheck.check_operator_files`:

* valid: the pipeline's Decider, roster and routing are replaced under a lock
  (each a reference swap, so a mail being decided keeps the version it began
  with) and the new hashes are logged;
* invalid (and still the same a moment later, so not a save in progress): the
  last good version keeps running, the problems are logged, and
  ONE alert per broken version goes to ``alerts.operator_address`` through the
  outbox. Its Message-ID is derived from the broken version's hash, so the
  outbox's unique index keeps it at one even across restarts and instances.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .config import Config
from .errors import Problem
from .outbox import enqueue
from .outgoing import machine_mail
from .roster import Roster
from .routing import Routing
from .rulecheck import OperatorFiles, check_operator_files, fingerprint, watched_files
from .verdict import Decider

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
ALERT_KIND = "operator_alert"
MAX_PROBLEMS_IN_ALERT = 50


class Target(Protocol):
    """What a reload swaps: the pipeline holds these three references and replaces them together."""

    decider: Decider
    roster: Roster | None
    routing: Routing | None

    def replace_setup(self, decider: Decider, roster: Roster | None, routing: Routing | None) -> None: ...


@dataclass(frozen=True)
class ReloadResult:
    status: str  # unchanged | reloaded | rejected | settling | unreadable
    fingerprint: str = ""
    problems: tuple[Problem, ...] = ()
    alerted: bool = False


def operator_files_fingerprint(cfg: Config) -> str | None:
    """One hash over the rules, roster and routing files as they are on disk now; None while a file
    vanishes mid-save (look again later)."""
    try:
        return fingerprint(
            watched_files(
                cfg.resolve(cfg.paths.rules_dir),
                cfg.resolve(cfg.roster.roster_file),
                cfg.resolve(cfg.roster.routing_file),
            )
        )
    except OSError:
        return None


class RuleReloader:
    def __init__(
        self,
        cfg: Config,
        sessions: sessionmaker[Session],
        target: Target,
        *,
        clock: Clock,
        notify: Callable[[], None] = lambda: None,
        settle_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        built_from: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.target = target
        self.clock = clock
        self.notify = notify  # wakes the outbox after an alert was queued
        # before refusing a version, look again after this long: an editor may still be saving
        self.settle_seconds = settle_seconds
        self.sleep = sleep
        self.rules_dir = cfg.resolve(cfg.paths.rules_dir)
        self.roster_file: Path | None = cfg.resolve(cfg.roster.roster_file)
        self.routing_file: Path | None = cfg.resolve(cfg.roster.routing_file)
        self.lock = threading.Lock()
        self.rejected: set[str] = set()
        # The version the service was built with (taken before it read the files, see build_service): a
        # change saved between then and now differs from it and is picked up at the first check. Without
        # it, the version on disk now is taken for the one in use.
        self.current = built_from if built_from is not None else (self._fingerprint() or "")

    def _fingerprint(self) -> str | None:
        return operator_files_fingerprint(self.cfg)

    def check(self, *, forced: bool = False) -> ReloadResult:
        """Look once: swap in a changed valid version, or alert once about a changed broken one."""
        with self.lock:
            stamp = self._fingerprint()
            if stamp is None:
                return ReloadResult("unreadable")
            if stamp == self.current or (stamp in self.rejected and not forced):
                if forced:
                    log.info("reload requested: files unchanged", extra={"fingerprint": stamp[:12]})
                return ReloadResult("unchanged", stamp)
            files, report = check_operator_files(
                self.rules_dir,
                self.roster_file,
                self.routing_file,
                threshold=self.cfg.decision.acute_threshold,
                model_weight=self.cfg.decision.model_weight if self.target.decider.model is not None else 0.0,
            )
            problems = report.problems if files is None else self._roster_lost(files)
            if files is None or problems:
                if self.settle_seconds > 0:
                    self.sleep(self.settle_seconds)
                    if self._fingerprint() != stamp:
                        return ReloadResult("settling", stamp)  # still being written: judge it next time
                return self._reject(stamp, problems)
            self._swap(files)
            return ReloadResult("reloaded", files.fingerprint)

    def _roster_lost(self, files: OperatorFiles) -> list[Problem]:
        """A roster that disappears while the service runs is kept: without it contact persons would get
        the guidance meant for officials, cases would go unassigned and alerts to alerts.duty_address.
        Most often it is an editor saving by delete-and-recreate, or a slip; running without a roster
        is a decision for a restart."""
        if files.roster is not None or self.target.roster is None:
            return []
        gone = "the roster file is gone; the running roster stays. Put it back, or restart to run without one"
        return [Problem(str(self.roster_file), None, "", gone)]

    def _swap(self, files: OperatorFiles) -> None:
        target = self.target
        old = target.decider
        # roster people count as our own addresses for the guards (never auto-answered)
        people = frozenset(files.roster.addresses) if files.roster else frozenset()
        policy = dataclasses.replace(old.policy, roster_addresses=people)
        target.replace_setup(old.with_rules(files.rules, policy), files.roster, files.routing)
        old_hash = old.rules.hash
        self.current = files.fingerprint
        log.info(
            "rules reloaded",
            extra={
                "rules_hash": files.rules.hash,
                "previous_rules_hash": old_hash,
                "fingerprint": files.fingerprint,
                "rules": len(files.rules.rules),
                "roster_persons": len(files.roster.persons) if files.roster else 0,
                "topics": len(files.routing.topics) if files.routing else 0,
            },
        )

    def _reject(self, stamp: str, problems: list[Problem]) -> ReloadResult:
        first_time = stamp not in self.rejected
        self.rejected.add(stamp)
        if first_time:
            log.error(
                "rules change rejected; the last good version keeps running",
                extra={
                    "fingerprint": stamp,
                    "running_rules_hash": self.target.decider.rules.hash,
                    "problems": [str(p) for p in problems[:MAX_PROBLEMS_IN_ALERT]],
                },
            )
        alerted = self._alert(stamp, problems) if first_time else False
        return ReloadResult("rejected", stamp, tuple(problems), alerted)

    def _alert(self, stamp: str, problems: list[Problem]) -> bool:
        to = self.cfg.alerts.operator_address
        if not to:
            log.warning("no alerts.operator_address configured: the rejected change is only logged")
            return False
        raw, message_id = build_alert(self.cfg, to, stamp, self.target.decider.rules.hash, problems, self.clock())
        try:
            with self.sessions.begin() as s:
                enqueue(
                    s,
                    kind=ALERT_KIND,
                    raw=raw,
                    recipient=to,
                    message_id=message_id,
                    now=self.clock(),
                    envelope_from=self.cfg.smtp.envelope_from,
                )
        except IntegrityError:
            log.info("operator alert for this version was queued before", extra={"fingerprint": stamp[:12]})
            return False
        self.notify()
        return True

    def run(self, stop: threading.Event, wake: threading.Event, interval: float) -> None:
        """Poll every ``interval`` seconds (0: only when woken) until ``stop``; never dies on an error."""
        tick = interval if interval > 0 else 1.0
        while not stop.is_set():
            woken = wake.wait(tick)
            wake.clear()
            if stop.is_set():
                break
            if not woken and interval <= 0:
                continue
            try:
                self.check(forced=woken)
            except Exception:
                log.exception("rule reload check failed; the running rules stay")


def build_alert(
    cfg: Config, to: str, stamp: str, running_hash: str, problems: list[Problem], now: datetime
) -> tuple[bytes, str]:
    """The operator alert: which version was refused, what still runs, and every problem."""
    message_id = f"<omo-rules-rejected-{stamp[:32]}@{cfg.smtp.message_id_domain}>"
    shown = problems[:MAX_PROBLEMS_IN_ALERT]
    more = len(problems) - len(shown)
    body = [
        "A change to the rules or roster files was NOT loaded because it has problems.",
        f"The service keeps running with the last good rules (hash {running_hash[:12]}).",
        "",
        f"Refused version: {stamp[:12]}",
        f"Problems ({len(problems)}):",
        *(f"  {p}" for p in shown),
        *([f"  ... and {more} more; run `omo-mailbot rules check`"] if more > 0 else []),
        "",
        "Fix the files and save them again (or send SIGHUP); `omo-mailbot rules check` shows the same list.",
    ]
    raw = machine_mail(
        cfg.smtp,
        cfg.autoreply.loop_header,
        to=to,
        subject=f"[omo-mailbot] rules change refused: {len(problems)} problem(s)",
        message_id=message_id,
        now=now,
        kind="auto-generated",
        text="\n".join(body) + "\n",
    )
    return raw, message_id
