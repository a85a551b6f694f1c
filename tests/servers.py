"""Real servers for the tests: a throw-away Dovecot and an aiosmtpd sink, on loopback.

Built from ../shared/notes/dovecot-test-server.md. Dovecot runs as a child of
the test process from a config in its own temp dir on a free 127.0.0.1 port;
the SMTP sink runs in a thread. In CI (``CI=true``) a server that cannot start
is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOVECOT_CONF = """\
instance_name = omo-test-{port}
base_dir  = {root}/run
state_dir = {root}/state
log_path  = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user  = dovecot
default_internal_group = dovecot
default_login_user     = dovenull
mail_uid = {mailuser}
mail_gid = {mailuser}
first_valid_uid = 1
first_valid_gid = 1
disable_plaintext_auth = no
auth_mechanisms = plain login{extra_mechs}
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
{extra_passdb}
userdb {{
  driver = static
  args = home={root}/mail/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = optimized
protocol imap {{
  mail_max_userip_connections = 200
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = 0
  }}
}}
ssl = no
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pdeathsig() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ensure_dovecot() -> str | None:
    """Path of the dovecot binary, installing the Debian package when missing (we are root)."""
    path = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "dovecot-imapd"],
            check=False,
            env=env,
            capture_output=True,
            timeout=900,
        )
    return shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


class DovecotServer:
    def __init__(
        self,
        users: dict[str, str],
        *,
        mailuser: str = "dovecot",
        extra_mechs: str = "",
        extra_passdb: str = "",
        extra_conf: str = "",
    ) -> None:
        self.users = dict(users)
        self.extra_conf = extra_conf
        self.mailuser = mailuser
        self.extra_mechs = extra_mechs
        self.extra_passdb = extra_passdb
        self.root = Path(tempfile.mkdtemp(prefix="omo-dovecot-"))
        os.chmod(self.root, 0o755)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        pw = pwd.getpwnam(mailuser)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    def _write(self) -> None:
        (self.root / "mail").mkdir(exist_ok=True)
        os.chown(self.root / "mail", self.uid, self.gid)
        for user in self.users:
            home = self.root / "mail" / user
            home.mkdir(exist_ok=True)
            os.chown(home, self.uid, self.gid)
        (self.root / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        self.conf.write_text(
            DOVECOT_CONF.format(
                root=self.root,
                port=self.port,
                mailuser=self.mailuser,
                extra_mechs=self.extra_mechs,
                extra_passdb=self.extra_passdb,
            )
            + self.extra_conf
        )

    def start(self, port: int | None = None, attempts: int = 3) -> None:
        binary = ensure_dovecot()
        if binary is None:
            raise RuntimeError("dovecot is not installed and could not be installed (apt-get install dovecot-imapd)")
        for _ in range(attempts):
            self.port = port or free_port()
            self._write()
            self.proc = subprocess.Popen(
                [binary, "-F", "-c", str(self.conf)],
                start_new_session=True,
                preexec_fn=_pdeathsig,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_ready(10.0):
                return
            self.stop()
            if port is not None:
                break
        raise RuntimeError(f"dovecot did not start; log:\n{self.read_log()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"* OK"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            # imap processes with a logged-in client outlive the master: end them too, so that a
            # stopped server really is gone (and nothing is left running after the tests)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start(port=self.port)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def read_log(self) -> str:
        try:
            return (self.root / "dovecot.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def add_user(self, name: str, password: str) -> None:
        self.users[name] = password
        home = self.root / "mail" / name
        home.mkdir(exist_ok=True)
        os.chown(home, self.uid, self.gid)
        with (self.root / "passwd").open("a") as fh:
            fh.write(f"{name}:{{PLAIN}}{password}\n")

    def client(self, user: str) -> Any:
        import imapclient

        deadline = time.monotonic() + 5
        while True:
            c = imapclient.IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
            try:
                c.login(user, self.users[user])
                return c
            except imapclient.exceptions.LoginError:
                c.shutdown()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the passwd-file is re-read at most once a second


@dataclass
class Received:
    at: float
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


class SmtpSink:
    """aiosmtpd in a thread; records every message; can refuse with a chosen code."""

    def __init__(self, *, smtputf8: bool = False) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Received] = []
        self.cond = threading.Condition()
        self.refuse_with: str | None = None
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if sink.refuse_with:
                    return sink.refuse_with
                with sink.cond:
                    sink.messages.append(
                        Received(
                            time.perf_counter(), envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)
                        )
                    )
                    sink.cond.notify_all()
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, ready_timeout=5.0, enable_SMTPUTF8=smtputf8
        )

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def wait_for(self, pred: Callable[[list[Received]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True
