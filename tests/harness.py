"""Fault-injection helpers shared by the reliability tests and scripts/crash-test.

A backlog of distinct mails (acute and preparation mixed, one sender and one
thread each, so that every mail deserves its own case and, when acute, its own
reply), ``omo-mailbot run`` as a real child process, and the check of what must
hold afterwards: every mail stored once, decided once, answered at most once.
"""

from __future__ import annotations

import email
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from omo_mailbot.models import Case, MailboxCursor, Message, OutboxMail, Verdict

from . import mails

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TestMail:
    kind: str  # acute | preparation
    raw: bytes
    message_id: str
    sender: str


def backlog(n: int, seed: int = 7, prefix: str = "bl") -> list[TestMail]:
    """``n`` distinct mails, roughly 40 % acute, each from its own sender in its own thread."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = "acute" if rng.random() < 0.4 else "preparation"
        sender = f"{prefix}{i}.afzender@gemeente-{i % 17}.example"
        msgid = f"<{prefix}-{seed}-{i}@gemeente-test.example>"
        make = mails.acute if kind == "acute" else mails.preparation
        raw = make(
            sender=sender,
            name=f"Afzender {i}",
            msgid=msgid,
            subject=f"{'Onrust' if kind == 'acute' else 'Vraag'} {prefix} {i}",
        )
        out.append(TestMail(kind, raw, msgid, sender))
    return out


def append_all(dovecot: Any, user: str, raws: list[bytes], batch: int = 100, folder: str = "INBOX") -> None:
    c = dovecot.client(user)
    try:
        for start in range(0, len(raws), batch):
            c.multiappend(folder, raws[start : start + batch])
    finally:
        c.logout()


def reliable_config_extra(*, lease_seconds: float = 2.0) -> str:
    """Settings that let a restarted service pick up a killed sender's rows within seconds."""
    return (
        "[smtp]\n"
        "timeout_seconds = 1.0\n"
        "max_per_minute = 10000\n"
        "[service]\n"
        f"lease_seconds = {lease_seconds}\n"
        "outbox_poll_seconds = 0.5\n"
        "leader_check_seconds = 0.5\n"
        "[autoreply]\n"
        "global_max_per_hour = 100000\n"
        "per_sender_max = 100\n"
        "[imap]\n"
        "idle_renew_seconds = 30\n"
        "batch_size = 20\n"
    )


def start_run(config_path: Path, log_path: Path, *extra_args: str, env: dict[str, str] | None = None) -> Any:
    """``omo-mailbot run`` as a child process, logging to ``log_path``."""
    fh = log_path.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "omo_mailbot.cli", "--config", str(config_path), "run", *extra_args],
            cwd=ROOT,
            stdout=fh,
            stderr=fh,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    finally:
        fh.close()


def wait_for_log(log_path: Path, needle: str, timeout: float, *, after: int = 0) -> bool:
    """Wait until ``needle`` shows up in the log past byte ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if needle in log_path.read_text(errors="replace")[after:]:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def kill(proc: Any) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def stop(proc: Any, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return int(proc.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
        kill(proc)
        return -9


def count_rows(db_url: str, model: Any, *where: Any) -> int:
    from omo_mailbot.db import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())
    finally:
        engine.dispose()


@dataclass
class Audit:
    """What the database and the SMTP sink show after a run; ``problems`` must be empty."""

    stored: int = 0
    decided: int = 0
    cases: int = 0
    replies: int = 0
    outbox_open: int = 0
    resent_after_kill: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"stored {self.stored}, decided {self.decided}, cases {self.cases}, acute mails answered {self.replies}, "
            f"outgoing mails sent twice because of a kill between SMTP acceptance and marking sent: "
            f"{self.resent_after_kill}, outbox rows still open {self.outbox_open}, problems {len(self.problems)}"
        )


def audit(db_url: str, expected: list[TestMail], sink_contents: list[bytes]) -> Audit:
    """Check the guarantees of docs/reliability.md against the database and what the sink received."""
    from omo_mailbot.db import make_engine

    engine = make_engine(db_url)
    result = Audit()
    try:
        with engine.connect() as conn:
            msgs = conn.execute(select(Message.id, Message.message_id_header, Message.uid, Message.status)).all()
            verdicts = conn.execute(select(Verdict.message_id, func.count()).group_by(Verdict.message_id)).all()
            cases = conn.execute(select(Case.id)).all()
            outbox = conn.execute(
                select(
                    OutboxMail.kind,
                    OutboxMail.status,
                    OutboxMail.attempts,
                    OutboxMail.message_id_header,
                    OutboxMail.source_message_id,
                )
            ).all()
            cursors = conn.execute(select(MailboxCursor.uidvalidity, MailboxCursor.last_uid)).all()
    finally:
        engine.dispose()
    want = {m.message_id: m for m in expected}
    by_header = Counter(h for _, h, _, _ in msgs)
    result.stored = len(msgs)
    for msgid in want:
        if by_header[msgid] != 1:
            result.problems.append(f"{msgid} stored {by_header[msgid]} times")
    for header, n in by_header.items():
        if header not in want:
            result.problems.append(f"unexpected stored mail {header} ({n}x)")
    undecided = [mid for mid, _, _, status in msgs if status != "decided"]
    if undecided:
        result.problems.append(
            f"{len(undecided)} mails not decided: statuses {[s for *_, s in msgs if s != 'decided'][:5]}"
        )
    verdict_counts = dict(verdicts)
    result.decided = len(verdict_counts)
    for mid, header, _, _ in msgs:
        if verdict_counts.get(mid, 0) != 1:
            result.problems.append(f"{header} has {verdict_counts.get(mid, 0)} verdicts")
    result.cases = len(cases)
    if len(cases) != len(msgs):
        result.problems.append(f"{len(cases)} cases for {len(msgs)} mails (each mail is its own thread)")
    # outgoing mail: one auto-reply per acute mail at most, none lost
    sent_ids: Counter[str] = Counter()
    in_reply_to: dict[str, set[str]] = {}
    for content in sink_contents:
        msg = email.message_from_bytes(content, policy=policy.compat32)
        reply_id = (msg["Message-ID"] or "").strip()
        sent_ids[reply_id] += 1
        if msg["Auto-Submitted"] == "auto-replied":
            in_reply_to.setdefault((msg["In-Reply-To"] or "").strip(), set()).add(reply_id)
    result.replies = len(in_reply_to)  # acute mails answered
    for msgid, reply_ids in in_reply_to.items():
        if len(reply_ids) > 1:
            result.problems.append(f"{msgid} answered by {len(reply_ids)} different replies")
    for kind, status, attempts, header, _ in outbox:
        n = sent_ids[header]
        if status in ("pending", "sending"):
            result.outbox_open += 1
        if status == "failed":
            result.problems.append(f"{kind} {header} parked as failed although the receiver never refused")
        if n > 1:
            if attempts > 1 and n <= attempts:
                result.resent_after_kill += 1  # the one allowed exception, counted and reported
            else:
                result.problems.append(f"{kind} {header} received {n} times after {attempts} attempt(s)")
        if status == "sent" and n == 0:
            result.problems.append(f"{kind} {header} marked sent but never received")
    for msgid in in_reply_to:
        if msgid not in want or want[msgid].kind != "acute":
            result.problems.append(f"auto-reply to a non-acute or unknown mail {msgid}")
    # the cursor: one row, at the highest stored UID
    if len(cursors) != 1:
        result.problems.append(f"{len(cursors)} cursor rows")
    elif msgs and cursors[0][1] != max(uid for _, _, uid, _ in msgs):
        result.problems.append(f"cursor at UID {cursors[0][1]}, highest stored UID {max(u for _, _, u, _ in msgs)}")
    return result
