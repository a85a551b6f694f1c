"""Prometheus /metrics and /healthz, scraped over HTTP from a service that read real mail."""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from omo_mailbot.metrics import Health, Metrics, OpsServer, mail_kind, reason_code
from omo_mailbot.models import OutboxMail
from omo_mailbot.ops import start_operations
from omo_mailbot.outbox import enqueue
from omo_mailbot.service import ServiceState, build_service, open_database

from . import mails
from .servers import DovecotServer, free_port

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _value(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{series} not in the scrape:\n{text}"
    return float(m.group(1))


def _metrics_extra(stuck: float = 600.0) -> str:
    return f"[metrics]\nenabled = true\nport = {free_port()}\noutbox_stuck_seconds = {stuck}\n"


def _append(dovecot: DovecotServer, user: str, *raws: bytes) -> None:
    c = dovecot.client(user)
    for raw in raws:
        c.append("INBOX", raw)
    c.logout()


def test_a_pass_moves_the_counters_and_nothing_personal_is_in_the_labels(dovecot, mailbox_user, smtp_sink, make_config):
    first = "<eerste-melding@gemeente-voorbeeld.nl>"
    _append(
        dovecot,
        mailbox_user,
        mails.acute(msgid=first),
        mails.preparation(),
        # the same conversation again: answered once per thread, so this one is suppressed
        mails.acute(subject="Re: Demonstratie bij het gemeentehuis", in_reply_to=first),
    )
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=_metrics_extra())
    service, engine = build_service(cfg, state=ServiceState())
    ops = start_operations(cfg, service, engine, env={})
    try:
        service.run_once()
        status, text = _get(ops.server.port, "/metrics")
        assert status == 200
        assert _value(text, 'omo_mails_ingested_total{status="decided"}') == 3
        assert _value(text, 'omo_mails_decided_total{label="acute"}') == 2
        assert _value(text, 'omo_mails_decided_total{label="preparation"}') == 1
        assert _value(text, "omo_replies_queued_total") == 1
        assert _value(text, 'omo_replies_suppressed_total{reason="rate-limit-thread"}') == 1
        assert _value(text, 'omo_mails_sent_total{kind="reply"}') == 1
        assert _value(text, 'omo_mails_sent_total{kind="notification"}') == 2  # two duty alerts
        assert _value(text, 'omo_outbox_mails{status="sent"}') == 3
        assert _value(text, 'omo_outbox_mails{status="pending"}') == 0
        assert _value(text, "omo_outbox_oldest_pending_age_seconds") == 0
        assert _value(text, "omo_polls_total") == 1
        assert 0 <= _value(text, "omo_seconds_since_last_poll") < 30
        assert _value(text, "omo_imap_reconnects_total") == 0
        assert _value(text, "omo_digest_runs_total") == 0
        assert _value(text, "omo_database_up") == 1
        assert "@" not in text and "Demonstratie" not in text  # no addresses or subjects in labels
        status, body = _get(ops.server.port, "/healthz")
        assert (status, body.splitlines()[0]) == (200, "ok"), body
    finally:
        ops.close()
        engine.dispose()


def test_healthz_fails_when_a_due_mail_is_stuck_in_the_outbox(dovecot, mailbox_user, make_config):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, extra=_metrics_extra(stuck=60))
    engine, sessions = open_database(cfg)
    server = OpsServer(Metrics(), Health(cfg, engine, sessions), "127.0.0.1", cfg.metrics.port).start()
    try:
        assert _get(server.port, "/healthz")[0] == 200
        with sessions.begin() as s:
            enqueue(
                s,
                kind="auto_reply",
                raw=b"Subject: x\r\n\r\nx\r\n",
                recipient="iemand@gemeente-voorbeeld.nl",
                message_id="<stuck@minbzk.nl>",
                now=datetime.now(UTC) - timedelta(minutes=5),
            )
        status, body = _get(server.port, "/healthz")
        assert status == 503
        assert "outbox stuck" in body
        assert _value(_get(server.port, "/metrics")[1], "omo_outbox_oldest_pending_age_seconds") >= 290
    finally:
        server.close()
        engine.dispose()


@pytest.mark.sqlite_only
@pytest.mark.skipif(os.environ.get("OMO_TEST_DB") == "postgresql", reason="deletes the SQLite file")
def test_healthz_fails_when_the_sqlite_file_is_gone(dovecot, mailbox_user, make_config):
    cfg = make_config(dovecot=dovecot, user=mailbox_user, extra=_metrics_extra())
    engine, sessions = open_database(cfg)
    server = OpsServer(Metrics(), Health(cfg, engine, sessions), "127.0.0.1", cfg.metrics.port).start()
    try:
        assert _get(server.port, "/healthz")[0] == 200
        db_file = Path(cfg.database.url[len("sqlite:///") :])
        for suffix in ("", "-wal", "-shm"):
            Path(str(db_file) + suffix).unlink(missing_ok=True)
        status, body = _get(server.port, "/healthz")
        assert status == 503
        assert "database: the SQLite file" in body and "is gone" in body
    finally:
        server.close()
        engine.dispose()


def test_healthz_fails_when_the_database_does_not_answer(dovecot, mailbox_user, make_config):
    from omo_mailbot.db import make_engine, session_factory

    cfg = make_config(dovecot=dovecot, user=mailbox_user, extra=_metrics_extra())
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing_here")
    server = OpsServer(Metrics(), Health(cfg, engine, session_factory(engine)), "127.0.0.1", cfg.metrics.port).start()
    try:
        status, body = _get(server.port, "/healthz")
        assert status == 503
        assert "database: database unreachable" in body
        assert _value(_get(server.port, "/metrics")[1], "omo_database_up") == 0
    finally:
        server.close()
        engine.dispose()


def test_healthz_fails_when_imap_is_down(tmp_path, make_config):
    srv = DovecotServer(users={"omo": "omo-secret"})
    srv.start()
    try:
        cfg = make_config(dovecot=srv, user="omo", extra=_metrics_extra())
        engine, sessions = open_database(cfg)
        health = Health(cfg, engine, sessions, imap_cache_seconds=0)
        server = OpsServer(Metrics(), health, "127.0.0.1", cfg.metrics.port).start()
        try:
            assert _get(server.port, "/healthz")[0] == 200
            srv.stop()
            status, body = _get(server.port, "/healthz")
            assert status == 503
            assert f"imap: IMAP 127.0.0.1:{srv.port} unreachable" in body
        finally:
            server.close()
            engine.dispose()
    finally:
        srv.cleanup()


def test_reason_codes_and_kinds_never_carry_free_text():
    assert reason_code("rate-limit-thread: already answered this conversation in the last 168 h") == (
        "rate-limit-thread"
    )
    assert reason_code("robot-sender: noreply@example.org; precedence: bulk") == "robot-sender"
    assert reason_code("Iemand <a@b.nl> schreef") == "other"
    assert reason_code(None) == "other"
    assert mail_kind(b"From: x\r\nAuto-Submitted: auto-replied\r\n\r\nbody") == "reply"
    assert mail_kind(b"From: x\r\nAuto-Submitted: auto-generated\r\n\r\nAuto-Submitted: auto-replied") == (
        "notification"
    )


@pytest.mark.sqlite_only
def test_health_and_the_outbox_read_beside_a_writer_that_holds_the_sqlite_lock(tmp_path):
    """During a backlog the pipeline holds SQLite's write lock for a whole batch; readers must not queue."""
    import threading

    from sqlalchemy import func, insert, select

    from omo_mailbot import db
    from omo_mailbot.config import load_config
    from omo_mailbot.models import Counter, table_of

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    db.upgrade(url)
    (tmp_path / "c.toml").write_text(f'[database]\nurl = "{url}"\n[imap]\nusername = "omo"\n')
    cfg = load_config(str(tmp_path / "c.toml"))
    engine = db.make_engine(url)
    writer = engine.connect()
    writer.begin()  # BEGIN IMMEDIATE: the write lock, as a batch being processed holds it
    writer.execute(insert(table_of(Counter)).values(name="busy", value=1))
    done: dict[str, object] = {}

    def in_thread(name: str, fn) -> threading.Thread:
        thread = threading.Thread(target=lambda: done.__setitem__(name, fn()), daemon=True)
        thread.start()
        return thread

    readers = db.session_factory(db.reader(engine))
    health = Health(cfg, db.reader(engine), readers)
    count_rows = select(func.count()).select_from(table_of(Counter))
    checks = [
        in_thread("health", health.database_problem),
        in_thread("outbox", health.outbox_oldest_age),
        in_thread("reader", lambda: readers().execute(count_rows).scalar_one()),
    ]
    blocked = in_thread("writer engine", lambda: db.session_factory(engine)().execute(count_rows).scalar_one())
    for thread in checks:
        thread.join(timeout=10)
    assert done == {"health": None, "outbox": None, "reader": 0}  # answered, without the uncommitted row
    assert blocked.is_alive()  # a session on the writer engine does wait for the lock
    writer.commit()
    blocked.join(timeout=10)
    assert done["writer engine"] == 1
    writer.close()
    engine.dispose()


def test_a_service_that_never_completes_a_pass_is_unhealthy_once_the_limit_has_passed(make_config):
    from omo_mailbot.service import ServiceState

    cfg = make_config(extra='[imap]\nusername = "omo"\nuse_idle = false\npoll_interval_seconds = 30\n')
    engine, sessions = open_database(cfg)
    state = ServiceState()
    health = Health(cfg, engine, sessions, state=state)
    assert health.poll_problem() is None  # just started: nothing is late yet
    state.started_at -= 2 * 30 + 61  # the limit (2 x poll interval + 60 s) has passed without a completed pass
    assert "no completed poll since start-up" in (health.poll_problem() or "")
    state.last_poll_ok = time.time()  # a pass completed
    assert health.poll_problem() is None
    engine.dispose()


def test_a_mail_put_off_again_and_again_during_an_outage_still_makes_the_outbox_stuck(make_config):
    """Each retry moves the due time on, so 'due for too long' never fires; the age since queueing does."""
    cfg = make_config(extra="[metrics]\noutbox_undelivered_seconds = 3600\n")
    engine, sessions = open_database(cfg)
    health = Health(cfg, engine, sessions)
    now = datetime.now(UTC)
    with sessions.begin() as s:
        row_id = enqueue(
            s,
            kind="auto_reply",
            raw=b"Subject: x\r\n\r\nx\r\n",
            recipient="iemand@gemeente-voorbeeld.nl",
            message_id="<outage@minbzk.nl>",
            now=now - timedelta(minutes=50),
        )
        row = s.get(OutboxMail, row_id)
        assert row is not None
        row.next_attempt_at = now + timedelta(minutes=5)  # held behind an unreachable receiver
    assert health.outbox_problem() is None  # 50 minutes: a long outage, not yet an alarm
    with sessions.begin() as s:
        s.get(OutboxMail, row_id).created_at = now - timedelta(minutes=61)
    assert "s ago is still unsent (limit 3600 s)" in (health.outbox_problem() or "")
    engine.dispose()


class _HangingDatabase(Health):
    """A database check that hangs (as a PostgreSQL server that accepts but never answers) until released."""

    hang_seconds = 8.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.calls = 0

    def database_problem(self) -> str | None:
        self.calls += 1
        self.release.wait(self.hang_seconds)
        return super().database_problem()


def _deadline_extra(timeout: float = 0.5) -> str:
    return f"[metrics]\nenabled = true\nport = {free_port()}\nhealthz_timeout_seconds = {timeout}\n"


def test_a_hanging_database_check_makes_the_report_give_up_at_its_deadline_without_piling_up(make_config):
    cfg = make_config(extra=_deadline_extra(0.5))
    engine, sessions = open_database(cfg)
    health = _HangingDatabase(cfg, engine, sessions)
    try:
        for _ in range(3):  # monitoring retries while the database still hangs
            started = time.monotonic()
            report = health.report()
            assert time.monotonic() - started < 2.5  # the deadline (0.5 s), far from the hang (8 s)
            assert not report.ok
            assert report.checks["database"] == "no answer within 0.5 s"
            assert report.checks["outbox"].startswith("not checked")
            assert "database: no answer within 0.5 s" in report.render()
        assert health.calls == 1  # the requests waited for the one probe already running, none started another
        health.release.set()
        deadline = time.monotonic() + 10
        while not (report := health.report()).ok and time.monotonic() < deadline:
            time.sleep(0.05)
        assert report.ok, report.render()  # once the database answers again, so does /healthz
    finally:
        health.release.set()
        engine.dispose()


def test_healthz_answers_503_naming_the_database_within_its_deadline_when_the_database_hangs(make_config):
    cfg = make_config(extra=_deadline_extra(0.5))
    engine, sessions = open_database(cfg)
    health = _HangingDatabase(cfg, engine, sessions)
    server = OpsServer(Metrics(), health, "127.0.0.1", cfg.metrics.port).start()
    try:
        started = time.monotonic()
        status, body = _get(server.port, "/healthz")
        assert time.monotonic() - started < 2.5, body  # not the 8 s the database hangs
        assert status == 503
        assert "database: no answer within 0.5 s" in body
        started = time.monotonic()
        assert _get(server.port, "/metrics")[0] == 200  # /metrics does not wait for the hanging check
        assert time.monotonic() - started < 2.5
    finally:
        health.release.set()
        server.close()
        engine.dispose()


def test_the_healthz_deadline_must_be_positive(tmp_path):
    from omo_mailbot.config import ConfigError, load_config

    (tmp_path / "c.toml").write_text('[imap]\nusername = "omo"\n[metrics]\nhealthz_timeout_seconds = 0\n')
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.toml")
    assert any(
        "metrics.healthz_timeout_seconds: must be between 0.1 and 300, got 0.0" in str(p) for p in err.value.problems
    )
    (tmp_path / "c.toml").write_text('[imap]\nusername = "omo"\n[metrics]\nhealthz_timeout_seconds = 2.5\n')
    assert load_config(tmp_path / "c.toml").metrics.healthz_timeout_seconds == 2.5
