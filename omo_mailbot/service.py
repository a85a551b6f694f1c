"""The running service: wiring, the ingest loop and the outbox thread.

This is the composition root next to :mod:`cli`: the only place that builds
adapters, starts threads and decides when to give up. The ingest loop holds one
IMAP connection (IDLE, or polling), processes new mail one committed
transaction at a time, marks it on the server after the commit, and wakes the
outbox thread, which sends at once rather than at its next poll.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from . import classifier, corpus, db
from .config import Config, OAuthConfig
from .digest import DigestBuilder, DigestRunner
from .errors import AuthenticationFailed, TransientMailboxError
from .guards import GuardPolicy
from .leader import AdvisoryLockLeader, Leadership, SoleLeader
from .mail import parse
from .mailbox import FetchedMail, ImapSource, MaildirSource, MailSource
from .mailer import FileMailer, Mailer, SmtpMailer
from .outbox import OutboxWorker
from .pipeline import Outcome, Pipeline, sync_cursor
from .prepare import Prepared, Preparer
from .purge import purge
from .reload import RuleReloader, operator_files_fingerprint
from .roster import Roster, load_roster
from .routing import Routing, load_routing
from .rules import RuleSet, load_rules
from .scheduler import DigestScheduler
from .templating import Templates
from .verdict import Decider, decision_inputs
from .workdays import WorkCalendar

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- wiring ----------------------------------------------------------------


def training_set(
    cfg: Config, sessions: sessionmaker[Session] | None = None, *, include_test: bool = False
) -> tuple[list[str], list[str]]:
    """Texts and labels from the seed corpus (train split) plus stored relabels."""
    texts: list[str] = []
    labels: list[str] = []
    for ex in corpus.examples(cfg.resolve(cfg.paths.corpus_dir)):
        if ex.split == "test" and not include_test:
            continue
        mail = parse(ex.path.read_bytes())
        texts.append(decision_inputs(mail).model_text)
        labels.append(ex.label)
    if sessions is not None:
        from .relabels import relabelled_texts

        for text, label in relabelled_texts(sessions):
            texts.append(text)
            labels.append(label)
    return texts, labels


def train_model(cfg: Config, sessions: sessionmaker[Session] | None = None) -> classifier.TrainedModel:
    from . import training  # scikit-learn: loaded only to train, never by a running service

    texts, labels = training_set(cfg, sessions)
    model = training.train(texts, labels)
    classifier.save(model, cfg.resolve(cfg.paths.model_file))
    return model


def load_model(cfg: Config, sessions: sessionmaker[Session] | None = None) -> classifier.TrainedModel:
    path = cfg.resolve(cfg.paths.model_file)
    if not path.exists() and cfg.decision.auto_train:
        log.info("no model file yet: training one from the seed corpus", extra={"path": str(path)})
        return train_model(cfg, sessions)
    return classifier.load(path)


def guard_policy(cfg: Config, roster_addresses: list[str] | None = None) -> GuardPolicy:
    return GuardPolicy.from_config(cfg.autoreply, roster_addresses or [])


def build_decider(
    cfg: Config,
    *,
    rules: RuleSet | None = None,
    model: classifier.TrainedModel | None = None,
    sessions: sessionmaker[Session] | None = None,
    with_model: bool = True,
    roster_addresses: list[str] | None = None,
) -> Decider:
    rules = rules or load_rules(cfg.resolve(cfg.paths.rules_dir))
    if model is None and with_model:
        model = load_model(cfg, sessions)
    return Decider(
        rules,
        model,
        guard_policy(cfg, roster_addresses),
        threshold=cfg.decision.acute_threshold,
        model_weight=cfg.decision.model_weight,
        acknowledge_preparation=cfg.autoreply.acknowledge_preparation,
    )


def load_roster_and_routing(cfg: Config) -> tuple[Roster | None, Routing | None]:
    """The roster and routing files; no roster file means no roster (cases stay unassigned)."""
    roster_path = cfg.resolve(cfg.roster.roster_file)
    if not roster_path.is_file():
        log.warning("no roster file: cases stay unassigned and alerts go to alerts.duty_address")
        return None, None
    roster = load_roster(roster_path)
    routing_path = cfg.resolve(cfg.roster.routing_file)
    if not routing_path.is_file():
        log.warning("no routing file: cases get no topics and stay unassigned")
        return roster, None
    return roster, load_routing(routing_path, roster)


def build_digests(
    cfg: Config, sessions: sessionmaker[Session], roster: Roster | None, templates: Templates, clock: Clock
) -> DigestRunner:
    return DigestRunner(sessions, DigestBuilder(cfg, templates, build_calendar(cfg), roster), clock)


def build_calendar(cfg: Config) -> WorkCalendar:
    return WorkCalendar(cfg.digest.holiday_names, cfg.digest.extra_days_off, cfg.digest.extra_working_days)


def build_source(cfg: Config) -> MailSource:
    if cfg.source.kind == "maildir":
        return MaildirSource(cfg.resolve(cfg.source.maildir), max_bytes=int(cfg.imap.max_message_mb * 1024 * 1024))
    return ImapSource(cfg.imap, token_provider=token_provider(cfg.oauth) if cfg.imap.auth == "xoauth2" else None)


def build_mailer(cfg: Config) -> Mailer:
    if cfg.delivery.kind == "files":
        return FileMailer(cfg.resolve(cfg.delivery.outdir))
    return SmtpMailer(cfg.smtp, token_provider=token_provider(cfg.oauth) if cfg.smtp.auth == "xoauth2" else None)


def token_provider(oauth: OAuthConfig) -> Callable[[], str]:
    from .oauth import TokenSource

    return TokenSource(oauth).token


def open_database(cfg: Config) -> tuple[Engine, sessionmaker[Session]]:
    engine = db.make_engine(cfg.database.url)
    return engine, db.session_factory(engine)


# --- running ---------------------------------------------------------------


@dataclass
class ServiceState:
    stop: threading.Event = field(default_factory=threading.Event)
    outbox_wake: threading.Event = field(default_factory=threading.Event)
    reload: threading.Event = field(default_factory=threading.Event)  # set on SIGHUP: check rules/roster now
    last_poll_ok: float = 0.0
    started_at: float = field(default_factory=time.time)  # /healthz: no pass at all since then is a problem too
    reconnects: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    keep_outcomes: bool = False
    # metrics and systemd: objects with connected(), outcome(o), polled(), stopping() (omo_mailbot.ops)
    observers: list[Any] = field(default_factory=list)
    max_wait_seconds: float | None = None  # cap on one IDLE/poll wait, so polled() runs this often (watchdog)
    preparer: Preparer | None = None  # the last backlog's worker, stopped (its memory figures, for bench)


class Service:
    def __init__(
        self,
        cfg: Config,
        sessions: sessionmaker[Session],
        source: MailSource,
        pipeline: Pipeline,
        outbox: OutboxWorker,
        *,
        state: ServiceState | None = None,
        leader: Leadership | None = None,
        digests: DigestRunner | None = None,
        built_from: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.source = source
        self.pipeline = pipeline
        self.outbox = outbox
        self.state = state or ServiceState()
        self.leader: Leadership = leader or SoleLeader()
        self.last_purge: datetime | None = None
        self.digests = digests
        self.built_from = built_from  # fingerprint of the operator files the pipeline was built from

    def run_digests(self) -> None:
        """The scheduler's job: queue today's digests (once per person per day) and wake the sender.

        Until a roster file appears there is nobody to send to, and the run does nothing."""
        if self.digests is not None and self.pipeline.roster is not None:
            self.digests.builder.roster = self.pipeline.roster  # the newest valid roster (see reload.py)
        if self.digests is not None and self.digests.run().sent:
            self.state.outbox_wake.set()

    # one pass over new mail -------------------------------------------------
    def mark_leftovers(self, uidvalidity: int) -> int:
        """Mark committed mail whose marking a crash or an outage cut off (once per connection)."""
        last = sync_cursor(self.sessions, self.source.name, uidvalidity, self.pipeline.clock())
        leftover = self.source.unmarked_upto(last)
        batch = max(1, self.cfg.imap.batch_size)
        for start in range(0, len(leftover), batch):
            self.source.mark_processed(leftover[start : start + batch])
        if leftover:
            log.info("marked mail committed before an interruption", extra={"count": len(leftover)})
        return len(leftover)

    def ingest_pass(self, uidvalidity: int, stop: threading.Event | None = None) -> int:
        stop = stop or self.state.stop
        last = sync_cursor(self.sessions, self.source.name, uidvalidity, self.pipeline.clock())
        uids = self.source.uids_after(last)
        count = 0
        started = time.perf_counter()
        with contextlib.ExitStack() as closing:
            for batch, prepared in self._work(uids, closing):
                count += self._store_batch(uidvalidity, batch, prepared)
                if stop.is_set():
                    break
        self.state.last_poll_ok = time.time()
        if count > 1:  # a backlog; a single mail has its own "decided" line
            seconds = time.perf_counter() - started
            log.info("worked through a backlog", extra={"mails": count, "seconds": round(seconds, 3)})
        for observer in self.state.observers:
            observer.polled()
        return count

    def _work(
        self, uids: Sequence[int], closing: contextlib.ExitStack
    ) -> Iterator[tuple[list[FetchedMail], Sequence[Prepared | None] | None]]:
        """The pass's batches, each with what a worker parsed and decided ahead (a long pass) or None."""
        size = max(1, self.cfg.imap.batch_size)
        batches = _batches(self.source.fetch(uids), size)
        if not self.cfg.service.decide_ahead or len(uids) < 2 * size or _usable_cores() < 2:
            return ((batch, None) for batch in batches)
        # Under the systemd watchdog a hung worker must be given up on before systemd gives up on us.
        timeout = min(120.0, self.state.max_wait_seconds or 120.0)
        preparer = Preparer(self.pipeline.decider, timeout=timeout)
        self.state.preparer = preparer
        closing.callback(preparer.close)
        return preparer.ahead(batches)

    def _store_batch(
        self, uidvalidity: int, batch: list[FetchedMail], prepared: Sequence[Prepared | None] | None
    ) -> int:
        """Commit one batch, tell the observers, then mark it on the server; the number of mails."""
        worker = self.state.preparer
        if prepared is not None and worker is not None and worker.decider is not self.pipeline.decider:
            # rules, model or roster were reloaded during the pass: from here on decide with the new ones
            if worker.pid is not None:
                log.info("rules or roster reloaded during a backlog; the rest is decided in-process")
                worker.close()
            prepared = None
        decided_by = worker.decider if prepared is not None and worker is not None else None
        for outcome in self.pipeline.process_batch(self.source.name, uidvalidity, batch, prepared, decided_by):
            if self.state.keep_outcomes:
                self.state.outcomes.append(outcome)
            for observer in self.state.observers:
                observer.outcome(outcome)
            if outcome.queued_mail:
                self.state.outbox_wake.set()
        self.source.mark_processed([fetched.uid for fetched in batch])
        return len(batch)

    def run_once(self) -> int:
        uidvalidity = self.source.open()
        try:
            self.mark_leftovers(uidvalidity)
            count = self.ingest_pass(uidvalidity)
        finally:
            self.source.close()
        self.drain_outbox()
        return count

    def drain_outbox(self, max_rounds: int = 1000) -> None:
        self.outbox.reap()
        for _ in range(max_rounds):
            stats = self.outbox.run_once()
            if stats.throttled:
                self.state.stop.wait(1.0)
                continue
            if stats.sent + stats.retried + stats.failed == 0:
                break

    # the long-running loops --------------------------------------------------
    def ingest_forever(self, stop: threading.Event | None = None) -> None:
        """Read the mailbox until ``stop`` (default: the service's stop event) is set."""
        stop = stop or self.state.stop
        backoff = 1.0
        auth_failures = 0
        idle_timeout = float(
            self.cfg.imap.idle_renew_seconds if self.cfg.imap.use_idle else self.cfg.imap.poll_interval_seconds
        )
        while not stop.is_set():
            try:
                uidvalidity = self.source.open()
                auth_failures, backoff = 0, 1.0
                log.info("mailbox open", extra={"source": self.source.name.split("@")[-1]})
                self.mark_leftovers(uidvalidity)
                for observer in self.state.observers:
                    observer.connected()
                if self.state.max_wait_seconds:
                    idle_timeout = min(idle_timeout, self.state.max_wait_seconds)
                while not stop.is_set():
                    self.ingest_pass(uidvalidity, stop)
                    self.purge_if_due()
                    if stop.is_set():
                        break
                    self.source.wait_for_mail(idle_timeout, stop)
            except AuthenticationFailed as exc:
                auth_failures += 1
                log.error(
                    "IMAP login refused",
                    extra={"attempt": auth_failures, "max": self.cfg.imap.max_login_failures, "error": str(exc)},
                )
                if auth_failures >= self.cfg.imap.max_login_failures:
                    raise
                stop.wait(backoff)
                backoff = min(backoff * 4, 300.0)
            except TransientMailboxError as exc:
                self.state.reconnects += 1
                log.warning("IMAP connection trouble; reconnecting", extra={"error": str(exc), "in_s": backoff})
                stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
            except OperationalError as exc:
                # the database failed mid-pass: nothing of the mail in hand was committed or marked,
                # so after a pause the same mail is fetched again from the cursor
                log.warning(
                    "database trouble; retrying the mailbox pass",
                    extra={"error": type(exc.orig).__name__ if exc.orig else type(exc).__name__, "in_s": backoff},
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
            finally:
                self.source.close()

    def outbox_forever(self) -> None:
        last_reap = 0.0
        while not self.state.stop.is_set():
            try:
                if time.monotonic() - last_reap > 10:
                    self.outbox.reap()
                    last_reap = time.monotonic()
                stats = self.outbox.run_once()
                if stats.sent or stats.retried or stats.failed:
                    continue
                due = self.outbox.next_due_in()
                wait = (
                    self.cfg.service.outbox_poll_seconds
                    if due is None
                    else min(due, self.cfg.service.outbox_poll_seconds)
                )
                if stats.throttled:
                    wait = 1.0
                self.state.outbox_wake.wait(max(0.05, wait))
                self.state.outbox_wake.clear()
            except Exception:
                log.exception("outbox loop error; continuing")
                self.state.stop.wait(2.0)
        self.outbox.mailer.close()

    def purge_if_due(self) -> None:
        """The daily retention purge, run by the leader (see :mod:`purge`)."""
        now = self.pipeline.clock()
        if self.last_purge is not None and now - self.last_purge < timedelta(days=1):
            return
        self.last_purge = now
        try:
            purge(self.sessions, self.cfg.privacy.retention_days, now)
        except Exception:
            log.exception("retention purge failed; retrying tomorrow")

    def following(self) -> None:
        """Not the leader: alive and ready to take over (systemd readiness and watchdog, /healthz)."""
        self.state.last_poll_ok = time.time()
        for observer in self.state.observers:
            hook = getattr(observer, "following", None)
            if hook is not None:
                hook()

    def lead_forever(self) -> None:
        """Several instances: only the leader reads the mailbox; the others wait to take over."""
        check_every = max(0.5, self.cfg.service.leader_check_seconds)
        while not self.state.stop.is_set():
            if not self.leader.try_acquire(self.pipeline.clock()):
                if self.leader.reachable:
                    self.following()
                # under systemd's watchdog a follower must report alive more often than it checks the lock
                self.state.stop.wait(min(check_every, self.state.max_wait_seconds or check_every))
                continue
            lost = threading.Event()

            def watch(lost: threading.Event = lost) -> None:
                next_check = time.monotonic() + check_every
                while not lost.is_set():
                    if self.state.stop.wait(0.25):
                        lost.set()
                    elif time.monotonic() >= next_check:
                        if not self.leader.still_leading():
                            lost.set()
                        next_check = time.monotonic() + check_every

            watcher = threading.Thread(target=watch, name="leader-watch", daemon=True)
            watcher.start()
            try:
                self.ingest_forever(lost)
            finally:
                lost.set()
                watcher.join(timeout=check_every + 5)
                self.leader.release()

    def run_forever(self) -> None:
        self.pipeline.warm_up()  # an acute mail arriving first must not wait for lazy start-up work
        sender = threading.Thread(target=self.outbox_forever, name="outbox", daemon=True)
        sender.start()
        reloader = RuleReloader(
            self.cfg,
            self.sessions,
            self.pipeline,
            clock=self.pipeline.clock,
            notify=self.state.outbox_wake.set,
            built_from=self.built_from,
        )
        watcher = threading.Thread(
            target=reloader.run,
            args=(self.state.stop, self.state.reload, self.cfg.service.rules_reload_seconds),
            name="rules-reload",
            daemon=True,
        )
        watcher.start()
        scheduler = DigestScheduler(self.run_digests, self.cfg.digest) if self.digests is not None else None
        if scheduler is not None:
            scheduler.start(catch_up=True)
        try:
            if isinstance(self.leader, SoleLeader):
                self.ingest_forever()
            else:
                self.lead_forever()
        finally:
            if scheduler is not None:
                scheduler.stop()
            self.state.stop.set()
            self.state.outbox_wake.set()
            sender.join(timeout=self.cfg.service.shutdown_grace_seconds)


def _usable_cores() -> int:
    """The cores this process may run on (a container's or a cpuset's limit), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _batches(mails: Iterator[FetchedMail], size: int) -> Iterator[list[FetchedMail]]:
    """Consecutive lists of at most ``size`` mails (the source fetches in batches of the same size)."""
    batch: list[FetchedMail] = []
    for fetched in mails:
        batch.append(fetched)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_service(
    cfg: Config, *, clock: Clock = utcnow, state: ServiceState | None = None, decider: Decider | None = None
) -> tuple[Service, Engine]:
    templates = Templates(cfg.resolve(cfg.paths.templates_dir))  # operator files first: cheap, and fail fast
    state = state or ServiceState()
    engine, sessions = open_database(cfg)
    db.require_current_schema(engine)
    # Before reading them: a change saved meanwhile is reloaded. A file vanishing mid-save gives no
    # fingerprint; "" then makes the reloader's first look a reload.
    built_from = operator_files_fingerprint(cfg) or ""
    roster, routing = load_roster_and_routing(cfg)
    decider = decider or build_decider(cfg, sessions=sessions, roster_addresses=roster.addresses if roster else None)
    pipeline = Pipeline(sessions, decider, cfg, templates, build_calendar(cfg), clock, roster=roster, routing=routing)
    # built even without a roster: one added later (reload.py) must get digests without a restart
    digests = build_digests(cfg, sessions, roster, templates, clock)
    outbox = OutboxWorker(
        sessions,
        build_mailer(cfg),
        cfg.smtp,
        holder=f"{cfg.service.instance_name}/{os.getpid()}",  # unique even when instances share a name
        clock=clock,
        lease_seconds=max(cfg.smtp.timeout_seconds * 2, cfg.service.lease_seconds),
        readers=db.session_factory(db.reader(engine)),
        stopping=state.stop.is_set,
    )
    leader: Leadership = SoleLeader()
    if not db.is_sqlite(cfg.database.url):
        leader = AdvisoryLockLeader(
            engine,
            sessions,
            name=f"ingest:{cfg.source.kind}:{cfg.imap.username}@{cfg.imap.host}/{cfg.imap.folder}",
            holder=cfg.service.instance_name,
            lease_seconds=cfg.service.leader_check_seconds * 3,
        )
    service = Service(
        cfg,
        sessions,
        build_source(cfg),
        pipeline,
        outbox,
        state=state,
        leader=leader,
        digests=digests,
        built_from=built_from,
    )
    return service, engine
