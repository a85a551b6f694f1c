"""The running service: wiring, the ingest loop and the outbox thread.

This is the composition root next to :mod:`cli`: the only place that builds
adapters, starts threads and decides when to give up. The ingest loop holds one
IMAP connection (IDLE, or polling), processes new mail one committed
transaction at a time, marks it on the server after the commit, and wakes the
outbox thread, which sends at once rather than at its next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from . import classifier, corpus, db
from .config import Config
from .errors import AuthenticationFailed, ModelError, TransientMailboxError
from .guards import GuardPolicy
from .mail import parse
from .mailbox import ImapSource, MaildirSource, MailSource
from .mailer import FileMailer, Mailer, SmtpMailer
from .outbox import OutboxWorker
from .pipeline import Outcome, Pipeline, sync_cursor
from .rules import RuleSet, load_rules
from .templating import Templates
from .text import new_text
from .verdict import Decider
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
        texts.append(classifier.model_text(mail.subject, new_text(mail).new))
        labels.append(ex.label)
    if sessions is not None:
        from .relabels import relabelled_texts

        for text, label in relabelled_texts(sessions):
            texts.append(text)
            labels.append(label)
    return texts, labels


def train_model(cfg: Config, sessions: sessionmaker[Session] | None = None) -> classifier.TrainedModel:
    texts, labels = training_set(cfg, sessions)
    model = classifier.train(texts, labels)
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
) -> Decider:
    rules = rules or load_rules(cfg.resolve(cfg.paths.rules_dir))
    if model is None and with_model:
        model = load_model(cfg, sessions)
    return Decider(
        rules, model, guard_policy(cfg), threshold=cfg.decision.acute_threshold, model_weight=cfg.decision.model_weight
    )


def build_calendar(cfg: Config) -> WorkCalendar:
    return WorkCalendar(cfg.digest.holiday_names, cfg.digest.extra_days_off, cfg.digest.extra_working_days)


def build_source(cfg: Config) -> MailSource:
    if cfg.source.kind == "maildir":
        return MaildirSource(cfg.resolve(cfg.source.maildir), max_bytes=int(cfg.imap.max_message_mb * 1024 * 1024))
    return ImapSource(cfg.imap, token_provider=token_provider(cfg) if cfg.imap.auth == "xoauth2" else None)


def build_mailer(cfg: Config) -> Mailer:
    if cfg.delivery.kind == "files":
        return FileMailer(cfg.resolve(cfg.delivery.outdir))
    return SmtpMailer(cfg.smtp, token_provider=token_provider(cfg) if cfg.smtp.auth == "xoauth2" else None)


def token_provider(cfg: Config) -> Callable[[], str]:
    from .oauth import TokenSource

    return TokenSource(cfg.oauth).token


def open_database(cfg: Config) -> tuple[Engine, sessionmaker[Session]]:
    engine = db.make_engine(cfg.database.url)
    return engine, db.session_factory(engine)


# --- running ---------------------------------------------------------------


@dataclass
class ServiceState:
    stop: threading.Event = field(default_factory=threading.Event)
    outbox_wake: threading.Event = field(default_factory=threading.Event)
    last_poll_ok: float = 0.0
    reconnects: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    keep_outcomes: bool = False


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
    ) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.source = source
        self.pipeline = pipeline
        self.outbox = outbox
        self.state = state or ServiceState()

    # one pass over new mail -------------------------------------------------
    def ingest_pass(self, uidvalidity: int) -> int:
        last = sync_cursor(self.sessions, self.source.name, uidvalidity, self.pipeline.clock())
        uids = self.source.uids_after(last)
        done: list[int] = []
        count = 0
        for fetched in self.source.fetch(uids):
            outcome = self.pipeline.process(self.source.name, uidvalidity, fetched)
            count += 1
            if self.state.keep_outcomes:
                self.state.outcomes.append(outcome)
            if outcome.queued_mail:
                self.state.outbox_wake.set()
            done.append(fetched.uid)
            if len(done) >= self.cfg.imap.batch_size:
                self.source.mark_processed(done)
                done = []
            if self.state.stop.is_set():
                break
        self.source.mark_processed(done)
        self.state.last_poll_ok = time.time()
        return count

    def run_once(self) -> int:
        uidvalidity = self.source.open()
        try:
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
    def ingest_forever(self) -> None:
        backoff = 1.0
        auth_failures = 0
        idle_timeout = float(
            self.cfg.imap.idle_renew_seconds if self.cfg.imap.use_idle else self.cfg.imap.poll_interval_seconds
        )
        while not self.state.stop.is_set():
            try:
                uidvalidity = self.source.open()
                auth_failures, backoff = 0, 1.0
                log.info("mailbox open", extra={"source": self.source.name.split("@")[-1]})
                while not self.state.stop.is_set():
                    self.ingest_pass(uidvalidity)
                    if self.state.stop.is_set():
                        break
                    self.source.wait_for_mail(
                        idle_timeout if self.cfg.imap.use_idle else float(self.cfg.imap.poll_interval_seconds),
                        self.state.stop,
                    )
            except AuthenticationFailed as exc:
                auth_failures += 1
                log.error(
                    "IMAP login refused",
                    extra={"attempt": auth_failures, "max": self.cfg.imap.max_login_failures, "error": str(exc)},
                )
                if auth_failures >= self.cfg.imap.max_login_failures:
                    raise
                self.state.stop.wait(backoff)
                backoff = min(backoff * 4, 300.0)
            except TransientMailboxError as exc:
                self.state.reconnects += 1
                log.warning("IMAP connection trouble; reconnecting", extra={"error": str(exc), "in_s": backoff})
                self.state.stop.wait(backoff)
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

    def run_forever(self) -> None:
        sender = threading.Thread(target=self.outbox_forever, name="outbox", daemon=True)
        sender.start()
        try:
            self.ingest_forever()
        finally:
            self.state.stop.set()
            self.state.outbox_wake.set()
            sender.join(timeout=self.cfg.service.shutdown_grace_seconds)


def build_service(
    cfg: Config, *, clock: Clock = utcnow, state: ServiceState | None = None, decider: Decider | None = None
) -> tuple[Service, Engine]:
    engine, sessions = open_database(cfg)
    db.require_current_schema(engine)
    decider = decider or build_decider(cfg, sessions=sessions)
    templates = Templates(cfg.resolve(cfg.paths.templates_dir))
    pipeline = Pipeline(sessions, decider, cfg, templates, build_calendar(cfg), clock)
    outbox = OutboxWorker(
        sessions,
        build_mailer(cfg),
        cfg.smtp,
        holder=cfg.service.instance_name,
        clock=clock,
        lease_seconds=max(cfg.smtp.timeout_seconds * 2, cfg.service.lease_seconds),
    )
    return Service(cfg, sessions, build_source(cfg), pipeline, outbox, state=state), engine


def model_path(cfg: Config) -> Path:
    return cfg.resolve(cfg.paths.model_file)


__all__ = ["ModelError", "Service", "ServiceState", "build_service"]
