"""Prometheus metrics and ``/healthz`` (the only importer of prometheus_client).

One small HTTP server, on 127.0.0.1 by default (``[metrics]`` in the config),
answers ``GET /metrics`` in the Prometheus text format and ``GET /healthz``
with 200 when the service can do its work, or 503 with the reason when the
database is unreachable (for SQLite: its file is gone), the IMAP server does not
answer, no poll succeeded for too long, or the outbox is stuck (a mail due
longer than ``metrics.outbox_stuck_seconds``). ``/healthz`` answers within
``metrics.healthz_timeout_seconds``: a check still running then makes it 503,
naming that check (see :meth:`Health.report`).

Counters move through :class:`Metrics`, which the service calls as an observer
(``connected``, ``outcome``, ``polled``). Labels are label names and reason
codes only: never an address, a subject or a Message-ID.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .config import Config
from .models import DigestRun, OutboxMail

_REASON = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
Clock = Callable[[], datetime]


def reason_code(blocked_by: str | None) -> str:
    """The code in front of a "code: detail" reason (guards, rate limits), or ``other``."""
    code = (blocked_by or "").split(":", 1)[0].split(";", 1)[0].strip().lower()
    return code if _REASON.match(code) else "other"


def mail_kind(raw: bytes) -> str:
    """``reply`` for an auto-reply (``Auto-Submitted: auto-replied``), ``notification`` for the rest."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
    return "reply" if b"auto-submitted: auto-replied" in head else "notification"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Metrics:
    """The service's counters; an observer of the ingest loop and of the mailer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ingested = Counter(
            "omo_mails_ingested", "Mails read from the mailbox and committed", ["status"], registry=r
        )
        self.decided = Counter("omo_mails_decided", "Mails decided, by label", ["label"], registry=r)
        self.replies_queued = Counter("omo_replies_queued", "Auto-replies queued for sending", registry=r)
        self.suppressed = Counter(
            "omo_replies_suppressed", "Acute mails that got no auto-reply, by reason code", ["reason"], registry=r
        )
        self.sent = Counter("omo_mails_sent", "Mails accepted by the SMTP server, by kind", ["kind"], registry=r)
        self.connects = Counter("omo_imap_logins", "Successful IMAP logins (the first and every reconnect)", registry=r)
        self.polls = Counter("omo_polls", "Completed passes over the mailbox", registry=r)
        self.last_poll = Gauge("omo_last_poll_timestamp_seconds", "Unix time of the last completed pass", registry=r)

    # observer of the ingest loop ------------------------------------------
    def connected(self) -> None:
        self.connects.inc()

    def outcome(self, outcome: Any) -> None:
        self.ingested.labels(status=str(outcome.status)).inc()
        if outcome.label:
            self.decided.labels(label=str(outcome.label)).inc()
        if outcome.label == "acute" and outcome.status == "decided":
            if outcome.replied:
                self.replies_queued.inc()
            else:
                self.suppressed.labels(reason=reason_code(outcome.blocked_by)).inc()

    def polled(self) -> None:
        self.polls.inc()
        self.last_poll.set(time.time())

    def stopping(self) -> None:
        return None

    def counting(self, mailer: Any) -> CountingMailer:
        return CountingMailer(mailer, self)


class CountingMailer:
    """Wraps a mailer: counts what the server accepted, by kind."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def send(self, envelope_from: str, recipient: str, raw: bytes) -> None:
        self.inner.send(envelope_from, recipient, raw)
        self.metrics.sent.labels(kind=mail_kind(raw)).inc()

    def close(self) -> None:
        self.inner.close()


@dataclass
class HealthReport:
    ok: bool
    checks: dict[str, str]

    def render(self) -> str:
        lines = [f"{name}: {result}" for name, result in self.checks.items()]
        return ("ok" if self.ok else "unhealthy") + "\n" + "\n".join(lines) + "\n"


HEALTH_CHECKS = ("database", "imap", "poll", "outbox")


class _ProbeRun:
    """One pass over the ``/healthz`` checks, in its own thread, shared by every request that waits for it.

    The checks run one after another in the order of :data:`HEALTH_CHECKS`, so while the run is
    in progress the first check without a result is the one it is waiting for.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: dict[str, str] = {}
        self._done = threading.Event()

    def check(self, name: str, probe: Callable[[], str | None], failed: str = "check failed") -> str:
        try:
            result = probe() or "ok"
        except Exception as exc:
            result = f"{failed}: {type(exc).__name__}"
        self.note(name, result)
        return result

    def note(self, name: str, result: str) -> None:
        with self._lock:
            self._checks[name] = result

    def finish(self) -> None:
        self._done.set()

    def finished(self) -> bool:
        return self._done.is_set()

    def report(self, timeout: float) -> HealthReport:
        """Wait up to ``timeout`` s for the run; past that, name the check it is still waiting for."""
        self._done.wait(timeout)
        with self._lock:
            known = dict(self._checks)
        stuck = next((name for name in HEALTH_CHECKS if name not in known), None)
        checks = {
            name: known.get(name)
            or (f"no answer within {timeout:g} s" if name == stuck else f"not checked (waiting for {stuck})")
            for name in HEALTH_CHECKS
        }
        return HealthReport(all(v == "ok" for v in checks.values()), checks)


class Health:
    """The checks behind ``/healthz`` and the database-backed gauges behind ``/metrics``."""

    def __init__(
        self,
        cfg: Config,
        engine: Engine,
        sessions: sessionmaker[Session],
        *,
        state: Any = None,
        clock: Clock = lambda: datetime.now(UTC),
        imap_cache_seconds: float = 5.0,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.sessions = sessions
        self.state = state
        self.clock = clock
        self.imap_cache_seconds = imap_cache_seconds
        self._imap: tuple[float, str | None] = (0.0, None)
        self._lock = threading.Lock()
        self._run: _ProbeRun | None = None
        self._run_lock = threading.Lock()

    # single checks: None when fine, else the reason ------------------------
    def database_problem(self) -> str | None:
        url = self.cfg.database.url
        if url.startswith("sqlite:///") and ":memory:" not in url and not Path(url[len("sqlite:///") :]).exists():
            return f"the SQLite file {url[len('sqlite:///') :]} is gone"
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"database unreachable: {type(exc).__name__}"
        return None

    def imap_problem(self) -> str | None:
        if self.cfg.source.kind != "imap":
            return None
        with self._lock:
            at, cached = self._imap
            if time.monotonic() - at < self.imap_cache_seconds:
                return cached
            result = self._probe_imap()
            self._imap = (time.monotonic(), result)
            return result

    def _probe_imap(self) -> str | None:
        imap = self.cfg.imap
        where = f"{imap.host}:{imap.port}"
        try:
            with socket.create_connection((imap.host, imap.port), timeout=3.0) as sock:
                sock.settimeout(3.0)
                if imap.security == "ssl":
                    ctx = ssl.create_default_context(cafile=imap.ca_file or None)
                    with ctx.wrap_socket(sock, server_hostname=imap.host) as tls:
                        greeting = tls.recv(64)
                else:
                    greeting = sock.recv(64)
        except OSError as exc:
            return f"IMAP {where} unreachable: {type(exc).__name__}"
        if not greeting.startswith(b"* OK"):
            return f"IMAP {where} sent no greeting"
        return None

    def poll_problem(self) -> str | None:
        """A pass over the mailbox should complete at least every IDLE renewal (or poll) and a minute.

        Before the first pass completes, the time since start-up counts: a service that
        keeps failing before it ever finishes a pass is not healthy either.
        """
        last = float(getattr(self.state, "last_poll_ok", 0.0) or 0.0)
        started = float(getattr(self.state, "started_at", 0.0) or 0.0)
        since = last or started
        if not since:
            return None
        imap = self.cfg.imap
        limit = 2 * max(imap.idle_renew_seconds if imap.use_idle else 0, imap.poll_interval_seconds) + 60
        age = time.time() - since
        if age <= limit:
            return None
        if not last:
            return f"no completed poll since start-up {age:.0f} s ago (limit {limit} s)"
        return f"no successful poll for {age:.0f} s (limit {limit} s)"

    def outbox_oldest_age(self) -> float | None:
        """Seconds the oldest due, unsent mail has been waiting (None when nothing is due)."""
        now = self.clock()
        with self.sessions() as s:
            oldest = s.execute(
                select(func.min(OutboxMail.next_attempt_at)).where(
                    OutboxMail.status.in_(("pending", "sending")), OutboxMail.next_attempt_at <= now
                )
            ).scalar()
        return None if oldest is None else max(0.0, (now - _utc(oldest)).total_seconds())

    def outbox_problem(self) -> str | None:
        """Two ways to be stuck: a due mail nobody sends (a dead sender), and a mail that keeps being
        put off (the receiver is down or refuses our login: each retry moves its due time on)."""
        age = self.outbox_oldest_age()
        limit = self.cfg.metrics.outbox_stuck_seconds
        if age is not None and age > limit:
            return f"outbox stuck: a mail has been due for {age:.0f} s (limit {limit:g} s)"
        now = self.clock()
        with self.sessions() as s:
            queued = s.execute(
                select(func.min(OutboxMail.created_at)).where(OutboxMail.status.in_(("pending", "sending")))
            ).scalar()
        waited = None if queued is None else (now - _utc(queued)).total_seconds()
        undelivered = self.cfg.metrics.outbox_undelivered_seconds
        if waited is not None and waited > undelivered:
            return f"outbox stuck: a mail queued {waited:.0f} s ago is still unsent (limit {undelivered:g} s)"
        return None

    def report(self) -> HealthReport:
        """All checks, answered within ``metrics.healthz_timeout_seconds`` however long a check takes.

        The checks run in one background thread per :class:`Health`, never more: a request
        starts a run when none is in progress, or else waits for the run in progress, and
        takes its result (fresh, never one cached from an earlier run, so a hang is not hidden
        behind an older "ok"). A request that has waited the timeout answers unhealthy,
        naming the check still running ("database: no answer within 3 s"), and leaves the
        run to finish on its own: the first request after it has finished starts the next.

        Not a thread per request with a join timeout: while the database hangs (a PostgreSQL
        connect gives up after 10 s) each monitoring request would leave a thread behind,
        each one more connection attempt, as many as the monitor sends in that time.
        """
        with self._run_lock:
            run = self._run
            if run is None or run.finished():
                run = self._run = _ProbeRun()
                threading.Thread(target=self._probe_all, args=(run,), name="healthz", daemon=True).start()
        return run.report(self.cfg.metrics.healthz_timeout_seconds)

    def _probe_all(self, run: _ProbeRun) -> None:
        try:
            database = run.check("database", self.database_problem)
            run.check("imap", self.imap_problem)
            run.check("poll", self.poll_problem)
            if database == "ok":
                run.check("outbox", self.outbox_problem, failed="cannot read the outbox")
            else:
                run.note("outbox", "unknown (no database)")
        finally:
            run.finish()


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time: outbox depth and age, digest runs, IMAP state."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[Any]:
        health = self.health
        state = health.state
        reconnects = CounterMetricFamily("omo_imap_reconnects", "IMAP connection losses followed by a reconnect")
        reconnects.add_metric([], float(getattr(state, "reconnects", 0) or 0))
        yield reconnects
        since = GaugeMetricFamily("omo_seconds_since_last_poll", "Seconds since the last successful pass (-1: none)")
        last = float(getattr(state, "last_poll_ok", 0.0) or 0.0)
        since.add_metric([], time.time() - last if last else -1.0)
        yield since
        up = GaugeMetricFamily("omo_database_up", "1 when the database answers")
        try:
            with health.sessions() as s:
                depth = s.execute(select(OutboxMail.status, func.count()).group_by(OutboxMail.status)).all()
                digests = s.execute(select(func.count()).select_from(DigestRun)).scalar_one()
            oldest = health.outbox_oldest_age()
        except Exception:
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        outbox = GaugeMetricFamily("omo_outbox_mails", "Mails in the outbox, by status", labels=["status"])
        counts = {str(status): int(n) for status, n in depth}
        for status in ("pending", "sending", "sent", "failed"):
            outbox.add_metric([status], float(counts.get(status, 0)))
        yield outbox
        age = GaugeMetricFamily("omo_outbox_oldest_pending_age_seconds", "Age of the oldest due, unsent mail (0: none)")
        age.add_metric([], oldest or 0.0)
        yield age
        runs = CounterMetricFamily("omo_digest_runs", "Digests queued (one per person per working day)")
        runs.add_metric([], float(digests))
        yield runs


class OpsServer:
    """``/metrics`` and ``/healthz`` on one port, served from a daemon thread."""

    def __init__(self, metrics: Metrics, health: Health, address: str, port: int) -> None:
        metrics.registry.register(DatabaseCollector(health))
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    report = health.report()
                    self._answer(200 if report.ok else 503, report.render().encode(), "text/plain; charset=utf-8")
                else:
                    self._answer(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _answer(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # scrapes every few seconds would flood the log

        self.httpd = ThreadingHTTPServer((address, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
