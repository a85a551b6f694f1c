"""Several instances: SQLite allows one; on PostgreSQL two share the work and nothing is done twice."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from omo_mailbot import db
from omo_mailbot.models import Lease, Message, OutboxMail

from .harness import (
    append_all,
    audit,
    backlog,
    count_rows,
    kill,
    reliable_config_extra,
    start_run,
    stop,
    wait_for_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ON_POSTGRES = os.environ.get("OMO_TEST_DB", "sqlite") == "postgresql"
N_MAILS = int(os.environ.get("OMO_INSTANCES_MAILS", "200"))


def test_sqlite_refuses_a_second_instance_with_a_clear_message(dovecot, mailbox_user, make_config, tmp_path):
    url = f"sqlite:///{tmp_path / 'single.db'}"
    db.upgrade(url)
    make_config(dovecot=dovecot, user=mailbox_user, extra=f'[database]\nurl = "{url}"\n')
    config, log_a, log_b = tmp_path / "config.toml", tmp_path / "a.log", tmp_path / "b.log"
    first = start_run(config, log_a)
    try:
        assert wait_for_log(log_a, "mailbox open", 60), log_a.read_text()[-2000:]
        second = start_run(config, log_b)
        assert second.wait(timeout=60) == 4
        assert "another omo-mailbot instance is already running" in log_b.read_text()
        assert "PostgreSQL" in log_b.read_text()  # and what to do instead
        assert first.poll() is None  # the first one is not disturbed
    finally:
        assert stop(first) == 0, log_a.read_text()[-2000:]


def _config_copy(make_config, dovecot, user, sink, tmp_path, name: str):
    # small FETCH batches: the leader commits every 10 mails, so a kill finds it mid-backlog
    extra = reliable_config_extra() + f'[service]\ninstance_name = "{name}"\n[imap]\nbatch_size = 10\n'
    make_config(dovecot=dovecot, user=user, sink=sink, extra=extra)
    path = tmp_path / f"{name}.toml"
    shutil.copy(tmp_path / "config.toml", path)
    return path


@contextlib.contextmanager
def _notify_socket() -> Iterator[tuple[socket.socket, str]]:
    folder = tempfile.mkdtemp(prefix="omo-sd-")  # short: AF_UNIX paths end at 108 bytes
    path = str(Path(folder) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def _receive_until(sock: socket.socket, wanted: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got = sock.recv(4096).decode()
        except TimeoutError:
            break
        if wanted in got.splitlines():
            return got
    return ""


def _leader(db_url: str) -> tuple[str, int] | None:
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(Lease.holder, Lease.epoch)).first()
            return None if row is None else (row[0], row[1])
    finally:
        engine.dispose()


@pytest.mark.skipif(not ON_POSTGRES, reason="several instances need PostgreSQL (run with OMO_TEST_DB=postgresql)")
def test_two_instances_share_one_mailbox_and_the_survivor_takes_over_when_the_leader_dies(
    dovecot, mailbox_user, smtp_sink, make_config, db_url, tmp_path
):
    mails = backlog(N_MAILS, seed=11, prefix="inst")
    configs = {n: _config_copy(make_config, dovecot, mailbox_user, smtp_sink, tmp_path, n) for n in ("omo-a", "omo-b")}
    logs = {n: tmp_path / f"{n}.log" for n in configs}
    procs = {"omo-a": start_run(configs["omo-a"], logs["omo-a"])}
    try:
        assert wait_for_log(logs["omo-a"], "leading", 60), logs["omo-a"].read_text()[-2000:]
        with _notify_socket() as (sock, path):
            procs["omo-b"] = start_run(configs["omo-b"], logs["omo-b"], env={"NOTIFY_SOCKET": path})
            # the follower tells systemd it is ready, although it does not read the mailbox
            assert "STATUS=following" in _receive_until(sock, "READY=1", 60), logs["omo-b"].read_text()[-2000:]
        # the backlog arrives once both run, so that the kill below lands while the leader works through it
        append_all(dovecot, mailbox_user, [m.raw for m in mails])
        deadline = time.monotonic() + 60
        while count_rows(db_url, Message) < N_MAILS // 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        # one leader reads the mailbox; the other only sends
        assert _leader(db_url) == ("omo-a", 1)
        assert "mailbox open" not in logs["omo-b"].read_text()
        kill(procs.pop("omo-a"))
        stored_at_kill = count_rows(db_url, Message)
        assert stored_at_kill < N_MAILS, "the leader finished before it could be killed"
        assert wait_for_log(logs["omo-b"], "leading", 30), logs["omo-b"].read_text()[-2000:]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            open_rows = count_rows(db_url, OutboxMail, OutboxMail.status.in_(("pending", "sending")))
            if count_rows(db_url, Message) == N_MAILS and open_rows == 0:
                break
            time.sleep(0.3)
        assert _leader(db_url) == ("omo-b", 2)
    finally:
        for proc in procs.values():
            stop(proc)
    result = audit(db_url, mails, [m.content for m in smtp_sink.messages])
    print(f"\ntwo instances, leader killed after {stored_at_kill} of {N_MAILS} mails: {result.summary()}")
    assert result.problems == []
    assert result.stored == N_MAILS and result.outbox_open == 0


@pytest.mark.skipif(not ON_POSTGRES, reason="leader election is a PostgreSQL feature")
def test_one_leader_at_a_time_and_a_dead_leaders_lock_passes_on(db_url):
    from datetime import UTC, datetime

    from sqlalchemy import text

    from omo_mailbot.leader import AdvisoryLockLeader

    now = datetime.now(UTC)
    engine = db.make_engine(db_url)
    sessions = db.session_factory(engine)
    a = AdvisoryLockLeader(engine, sessions, name="ingest:test", holder="omo-a")
    b = AdvisoryLockLeader(engine, sessions, name="ingest:test", holder="omo-b")
    try:
        assert a.try_acquire(now) and a.epoch == 1
        assert not b.try_acquire(now)
        assert a.still_leading() and a.try_acquire(now)  # asking again changes nothing
        # the leader's connection dies (a crash, a network cut, an operator killing the backend)
        with engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objid = :k AND granted"
                ),
                {"k": a.key},
            )
        assert not a.still_leading()
        assert b.try_acquire(now) and b.epoch == 2
        assert not a.try_acquire(now)
        b.release()
        assert a.try_acquire(now) and a.epoch == 3
    finally:
        a.release()
        b.release()
        engine.dispose()


def test_two_instances_opening_the_first_case_of_a_year_at_once_both_get_a_reference(db_url):
    """The counter row of a new year does not exist yet; both writers must still get a number."""
    from omo_mailbot.cases import next_reference

    engine = db.make_engine(db_url)
    sessions = db.session_factory(engine)
    got: dict[str, str] = {}
    first = sessions()
    first.begin()
    got["first"] = next_reference(first, 2031)  # holds the (new) row until it commits

    def second() -> None:
        try:
            with sessions.begin() as s:
                got["second"] = next_reference(s, 2031)
        except Exception as exc:  # pragma: no cover - the failure this test is about
            got["second"] = f"{type(exc).__name__}: {exc}"

    other = threading.Thread(target=second)
    other.start()
    other.join(timeout=0.5)  # it waits for the first writer (row lock on PostgreSQL, writer lock on SQLite)
    first.commit()
    first.close()
    other.join(timeout=30)
    engine.dispose()
    assert got == {"first": "OMO-2031-0001", "second": "OMO-2031-0002"}
