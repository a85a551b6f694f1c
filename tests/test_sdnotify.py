"""systemd's notify protocol, received on a real AF_UNIX datagram socket from a running service."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from omo_mailbot.sdnotify import Notifier, notify, watchdog_interval

from .harness import start_run, stop
from .servers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    folder = tempfile.mkdtemp(prefix="omo-sd-")  # short: AF_UNIX paths end at 108 bytes
    path = str(Path(folder) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def _receive(sock: socket.socket, timeout: float) -> list[str]:
    """Every datagram that arrives within ``timeout`` seconds."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return got


def _wait_for(sock: socket.socket, wanted: str, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if wanted in got[-1].splitlines():
            return got
    raise AssertionError(f"no {wanted} within {timeout} s; got {got}")


def test_service_says_ready_pings_the_watchdog_and_says_stopping(
    notify_socket, dovecot, mailbox_user, smtp_sink, make_config, tmp_path
):
    sock, path = notify_socket
    make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}  # ping at least every second
    proc = start_run(tmp_path / "config.toml", tmp_path / "run.log", env=env)
    try:
        first = _wait_for(sock, "READY=1", 60)
        assert not any("WATCHDOG=1" in g for g in first)  # READY comes first, after the IMAP login
        started = time.monotonic()
        _wait_for(sock, "WATCHDOG=1", 10)
        _wait_for(sock, "WATCHDOG=1", 10)  # again: pings keep coming while the passes succeed
        assert time.monotonic() - started < 5  # at least every second (WATCHDOG_USEC / 2), with slack
        assert stop(proc) == 0
        _wait_for(sock, "STOPPING=1", 10)
    finally:
        stop(proc)
        if proc.returncode not in (0, None):
            print((tmp_path / "run.log").read_text(errors="replace")[-3000:])


def test_no_ready_and_no_watchdog_while_imap_cannot_be_reached(notify_socket, make_config, tmp_path):
    sock, path = notify_socket
    imap = f'host = "127.0.0.1"\nport = {free_port()}\nsecurity = "none"\nusername = "omo"\n'
    make_config(extra=f'[source]\nkind = "imap"\n[imap]\n{imap}')
    proc = start_run(
        tmp_path / "config.toml", tmp_path / "run.log", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}
    )
    try:
        assert _receive(sock, 4) == []
    finally:
        stop(proc)


def test_notify_is_a_no_op_outside_systemd_and_the_interval_is_half_the_watchdog():
    assert notify("READY=1", {}) is False
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # meant for another process


def test_a_long_pass_pings_on_progress_but_at_most_once_a_second(notify_socket):
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    for _ in range(50):  # fifty mails committed in quick succession
        notifier.outcome(None)
    assert _receive(sock, 0.3) == ["WATCHDOG=1"]
    notifier.connected()
    notifier.connected()  # READY only once, also after reconnects
    assert _receive(sock, 0.3) == ["READY=1\nSTATUS=mailbox open"]


def test_a_follower_reports_alive_within_the_watchdog_interval_even_with_a_slow_lock_check(make_config):
    import threading

    from omo_mailbot.service import ServiceState, build_service

    cfg = make_config(extra="[service]\nleader_check_seconds = 300\n")
    state = ServiceState(max_wait_seconds=0.1)  # WatchdogSec/2, as cli.run sets it under systemd
    service, engine = build_service(cfg, state=state)

    class NeverLeader:
        reachable = True

        def try_acquire(self, _now):
            return False

    pings: list[float] = []
    service.leader = NeverLeader()  # type: ignore[assignment]
    service.following = lambda: pings.append(time.monotonic())  # type: ignore[method-assign]
    follower = threading.Thread(target=service.lead_forever, daemon=True)
    follower.start()
    time.sleep(1.0)
    state.stop.set()
    follower.join(timeout=5)
    engine.dispose()
    assert len(pings) >= 5  # not once per 300 s lock check
