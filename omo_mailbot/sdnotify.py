"""systemd's notify protocol: one datagram per state change to ``$NOTIFY_SOCKET``.

``READY=1`` once the config and schema were checked and the first IMAP login
worked, ``WATCHDOG=1`` after every completed pass over the mailbox and, during a
long pass, at most once a second per committed mail (so a hung loop stops the
pings and systemd restarts the unit), ``STOPPING=1`` on shutdown.
Without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``); False when there is no socket or it failed."""
    address = (env if env is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Half of systemd's ``WatchdogSec`` in seconds (how often to ping), or None when off."""
    env = env if env is not None else os.environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """An observer of the ingest loop that tells systemd how the service is doing."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = env
        self.ready = False
        self._last_ping = 0.0

    def connected(self) -> None:
        if not self.ready:
            self.ready = notify("READY=1\nSTATUS=mailbox open", self.env) or self.ready

    def outcome(self, outcome: Any) -> None:
        """A committed mail is progress too: a long backlog pass must not look like a hang."""
        if time.monotonic() - self._last_ping >= 1.0:
            self.polled()

    def polled(self) -> None:
        self._last_ping = time.monotonic()
        notify("WATCHDOG=1", self.env)

    def following(self) -> None:
        """PostgreSQL, several instances: another one reads the mailbox; this one is up and ready to take over."""
        if not self.ready:
            self.ready = notify("READY=1\nSTATUS=following: another instance reads the mailbox", self.env) or self.ready
        notify("WATCHDOG=1", self.env)

    def stopping(self) -> None:
        notify("STOPPING=1", self.env)
