"""The mailbox misbehaves: restarts, wrong passwords, missing folders, a renumbered folder.

These tests stop and start Dovecot, so they use their own server (module-scoped),
never the session one that other tests share.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from omo_mailbot import db
from omo_mailbot.mailbox import ImapSource
from omo_mailbot.models import Case, MailboxCursor, Message, Verdict
from omo_mailbot.service import ServiceState, build_service

from . import mails
from .harness import ROOT, append_all, backlog, reliable_config_extra
from .servers import DovecotServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_dovecot() -> Iterator[DovecotServer]:
    srv = DovecotServer(users={"omo": "omo-secret"})
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture
def user(own_dovecot: DovecotServer) -> str:
    name = f"f{uuid.uuid4().hex[:8]}"
    own_dovecot.add_user(name, "pw-" + name)
    c = own_dovecot.client(name)
    c.select_folder("INBOX")
    c.logout()
    return name


def _count(sessions, model, *where) -> int:
    # read beside the busy writer, not behind it: a reader in WAL mode needs no lock
    with db.session_factory(db.reader(sessions.kw["bind"]))() as s:
        return int(s.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


class Running:
    """The service's loops in a thread of this process, stopped at the end."""

    def __init__(self, cfg) -> None:
        self.state = ServiceState()
        self.service, self.engine = build_service(cfg, state=self.state)
        self.thread = threading.Thread(target=self.service.run_forever, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.stop.set()
        self.state.outbox_wake.set()
        self.thread.join(timeout=20)
        self.engine.dispose()
        assert not self.thread.is_alive(), "the service did not stop within 20 s"


def _no_doubles(sessions, sink) -> None:
    with sessions() as s:
        headers = Counter(h for (h,) in s.execute(select(Message.message_id_header)))
    n_msgs = _count(sessions, Message)
    n_verdicts = _count(sessions, Verdict)
    assert all(n == 1 for n in headers.values()), headers.most_common(3)
    assert n_verdicts == n_msgs
    sent = Counter(m.content.split(b"Message-ID:", 1)[-1].split(b"\n", 1)[0].strip() for m in sink.messages)
    assert all(n == 1 for n in sent.values()), sent.most_common(3)


def test_dovecot_restart_while_idling_reconnects_and_loses_nothing(own_dovecot, user, smtp_sink, make_config):
    cfg = make_config(dovecot=own_dovecot, user=user, sink=smtp_sink, extra=reliable_config_extra())
    first, second = backlog(3, seed=1, prefix="idle-a"), backlog(3, seed=2, prefix="idle-b")
    with Running(cfg) as run:
        sessions = run.service.sessions
        append_all(own_dovecot, user, [m.raw for m in first])
        assert _wait(lambda: _count(sessions, Message) == 3, 20)
        time.sleep(1.5)  # back in IDLE
        own_dovecot.restart()
        append_all(own_dovecot, user, [m.raw for m in second])
        assert _wait(lambda: _count(sessions, Message) == 6, 40), own_dovecot.read_log()
        assert run.state.reconnects >= 1
        _no_doubles(sessions, smtp_sink)


def test_dovecot_restart_mid_fetch_reconnects_and_nothing_is_lost_or_doubled(own_dovecot, user, smtp_sink, make_config):
    cfg = make_config(dovecot=own_dovecot, user=user, sink=smtp_sink, extra=reliable_config_extra())
    batch = backlog(300, seed=3, prefix="midfetch")  # enough that a restart lands mid-fetch
    append_all(own_dovecot, user, [m.raw for m in batch])
    with Running(cfg) as run:
        sessions = run.service.sessions
        assert _wait(lambda: _count(sessions, Message) >= 3, 30)
        stored_before_restart = _count(sessions, Message)
        own_dovecot.restart()
        assert _wait(lambda: _count(sessions, Message) == 300, 90), own_dovecot.read_log()
        # more than a fetch batch was still on the server when the restart began
        assert stored_before_restart < 300 - cfg.imap.batch_size, "the restart came too late to interrupt the fetch"
        assert _wait(lambda: run.state.reconnects >= 1, 30)
        _no_doubles(sessions, smtp_sink)
        # every mail also ends up marked on the server, also those whose marking the restart cut off
        # (the reconnect marks committed mail that is still unmarked; it may come after the last commit)
        assert _wait(lambda: _unmarked(own_dovecot, user, cfg.imap.processed_keyword) == [], 30)


def _unmarked(srv: DovecotServer, user: str, keyword: str) -> list[int]:
    c = srv.client(user)
    c.select_folder("INBOX", readonly=True)
    found = c.search(["UNKEYWORD", keyword])
    c.logout()
    return list(found)


def _full_log(srv: DovecotServer) -> str:
    return (srv.root / "dovecot.log").read_text(errors="replace")


def _cli(config_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omo_mailbot.cli", "--config", str(config_path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def test_wrong_password_gives_up_loudly_after_a_few_spaced_attempts(own_dovecot, user, make_config, tmp_path):
    make_config(dovecot=own_dovecot, user=user, extra="[imap]\nmax_login_failures = 2\n")
    os.environ[f"OMO_TEST_PW_{user}"] = "not-the-password"
    log_before = len(_full_log(own_dovecot))
    start = time.monotonic()
    result = _cli(tmp_path / "config.toml", "run")
    took = time.monotonic() - start
    assert result.returncode == 3, result.stderr[-2000:]
    assert "login refused" in result.stderr
    log = _full_log(own_dovecot)[log_before:]
    attempts = sum(1 for line in log.splitlines() if "auth failed" in line and f"user=<{user}>" in line)
    assert attempts == 2, log
    assert took >= 1.0  # it waited between the attempts instead of hammering the server


def test_a_folder_that_does_not_exist_is_a_configuration_error_at_start_up(own_dovecot, user, make_config, tmp_path):
    make_config(dovecot=own_dovecot, user=user, extra='[imap]\nfolder = "Bestaat-Niet"\n')
    result = _cli(tmp_path / "config.toml", "run", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Bestaat-Niet" in result.stderr and "does not exist" in result.stderr


def test_uidvalidity_change_rescans_the_folder_without_duplicates(own_dovecot, user, smtp_sink, make_config):
    cfg = make_config(dovecot=own_dovecot, user=user, sink=smtp_sink, extra=reliable_config_extra())
    append_all(own_dovecot, user, [mails.acute(sender="a1@gemeente.example"), mails.preparation()])
    service, engine = build_service(cfg)
    service.run_once()
    with service.sessions() as s:
        old = s.execute(select(MailboxCursor.uidvalidity)).scalar_one()
    engine.dispose()
    replies_before = len(smtp_sink.messages)

    own_dovecot.stop()
    maildir = own_dovecot.root / "mail" / user / "Maildir"
    removed = [p for p in maildir.iterdir() if p.name == "dovecot-uidlist" or p.name.startswith("dovecot.index")]
    assert removed
    for p in removed:
        p.unlink()
    own_dovecot.start(port=own_dovecot.port)
    append_all(own_dovecot, user, [mails.acute(sender="a2@gemeente.example")])

    service, engine = build_service(cfg)
    service.run_once()
    with service.sessions() as s:
        new = s.execute(select(MailboxCursor.uidvalidity)).scalar_one()
    assert new != old
    assert _count(service.sessions, Message) == 3
    assert _count(service.sessions, Case) == 3
    assert len(smtp_sink.messages) == replies_before + 2  # the new mail's reply and duty alert, nothing repeated
    _no_doubles(service.sessions, smtp_sink)
    engine.dispose()


@pytest.fixture(scope="module")
def dovecot_without_idle() -> Iterator[DovecotServer]:
    """A server that does not offer IDLE (its post-login CAPABILITY lists no IDLE)."""
    srv = DovecotServer(
        users={"omo": "omo-secret"}, extra_conf="imap_capability = IMAP4rev1 LITERAL+ UIDPLUS MULTIAPPEND\n"
    )
    srv.start()
    yield srv
    srv.cleanup()


def test_a_server_without_idle_is_polled_at_the_polling_interval(dovecot_without_idle, smtp_sink, make_config):
    client = dovecot_without_idle.client("omo")
    assert not client.has_capability("IDLE")
    client.logout()
    # IDLE stays on in the config: the service must notice the server lacks it and poll every second,
    # not wait for idle_renew_seconds (600 s here)
    cfg = make_config(
        dovecot=dovecot_without_idle, user="omo", sink=smtp_sink, extra="[imap]\npoll_interval_seconds = 1\n"
    )
    assert cfg.imap.use_idle and cfg.imap.idle_renew_seconds == 600
    with Running(cfg) as run:
        sessions = run.service.sessions
        assert _wait(lambda: run.state.last_poll_ok > 0, 30)
        time.sleep(1.5)  # into the wait between polls
        append_all(dovecot_without_idle, "omo", [mails.preparation()])
        assert _wait(lambda: _count(sessions, Message) == 1, 15)


def test_move_to_on_a_server_without_move_is_a_configuration_error_at_start_up(
    dovecot_without_idle, make_config, tmp_path
):
    client = dovecot_without_idle.client("omo")
    if not client.folder_exists("Verwerkt"):
        client.create_folder("Verwerkt")
    assert not client.has_capability("MOVE")
    client.logout()
    make_config(dovecot=dovecot_without_idle, user="omo", extra='[imap]\nmove_to = "Verwerkt"\n')
    result = _cli(tmp_path / "config.toml", "run", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "imap.move_to: the server does not offer MOVE" in result.stderr


class _SkipsOneBody(ImapSource):
    """A server that answers FETCH BODY.PEEK[] without one of the messages it has (seen in the wild)."""

    skipped: int = 0

    def _call(self, what: str, method: str, *args, **kwargs):
        answer = super()._call(what, method, *args, **kwargs)
        if what == "FETCH BODY.PEEK[]":
            answer = {uid: data for uid, data in answer.items() if uid != self.skipped}
        return answer


def test_a_message_the_server_will_not_hand_over_becomes_a_case_for_a_human(own_dovecot, user, smtp_sink, make_config):
    append_all(own_dovecot, user, [mails.preparation(), mails.acute(), mails.preparation()])
    cfg = make_config(dovecot=own_dovecot, user=user, sink=smtp_sink)
    service, engine = build_service(cfg)
    source = _SkipsOneBody(cfg.imap)
    service.source = source
    uidvalidity = source.open()
    source.skipped = source.uids_after(0)[1]
    assert service.ingest_pass(uidvalidity) == 3  # the cursor passes it only as a stored error case
    source.close()
    with service.sessions() as s:
        skipped = s.execute(select(Message).where(Message.uid == source.skipped)).scalar_one()
        case = s.get(Case, skipped.case_id)
        assert skipped.status == "parse_failed" and case is not None and case.needs_human
        assert s.execute(select(func.count()).select_from(Verdict)).scalar_one() == 2
    engine.dispose()


def test_a_message_expunged_between_search_and_fetch_is_not_an_error(own_dovecot, user, make_config):
    append_all(own_dovecot, user, [mails.preparation(), mails.preparation(), mails.preparation()])
    cfg = make_config(dovecot=own_dovecot, user=user)
    source = ImapSource(cfg.imap)
    source.open()
    uids = source.uids_after(0)
    other = own_dovecot.client(user)  # another mail client deletes the middle one meanwhile
    other.select_folder("INBOX")
    other.delete_messages([uids[1]])
    other.expunge()
    other.logout()
    fetched = list(source.fetch(uids))
    source.close()
    assert [f.uid for f in fetched] == [uids[0], uids[2]]
    assert all(f.raw for f in fetched)


class _SkipsOneSize(ImapSource):
    """A server whose first FETCH RFC822.SIZE of a batch leaves one message out."""

    skipped: int = 0
    sizes_asked: int = 0

    def _call(self, what: str, method: str, *args, **kwargs):
        answer = super()._call(what, method, *args, **kwargs)
        if what == "FETCH RFC822.SIZE":
            self.sizes_asked += 1
            if self.sizes_asked == 1:
                answer = {uid: data for uid, data in answer.items() if uid != self.skipped}
        return answer


def test_a_left_out_message_over_the_size_limit_is_read_by_its_header_like_any_large_one(
    own_dovecot, user, make_config
):
    big = mails.preparation().replace(b"\r\n\r\n", b"\r\n\r\n" + b"x" * 76 + b"\r\n", 1) + b"y" * 2_200_000 + b"\r\n"
    append_all(own_dovecot, user, [mails.preparation(), big, mails.preparation()])
    cfg = make_config(dovecot=own_dovecot, user=user, extra="[imap]\nmax_message_mb = 1\n")
    source = _SkipsOneSize(cfg.imap)
    source.open()
    uids = source.uids_after(0)
    source.skipped = uids[1]
    fetched = {f.uid: f for f in source.fetch(uids)}
    source.close()
    assert sorted(fetched) == uids
    large = fetched[uids[1]]
    assert large.too_large and large.size > 2_000_000  # its real size, not an empty stand-in
    assert b"Subject:" in large.raw and b"yyyy" not in large.raw  # the header only
    assert all(not fetched[u].too_large and fetched[u].raw for u in (uids[0], uids[2]))
