"""SIGKILL ``omo-mailbot run`` at random moments while it works through a backlog.

The CI-sized version of scripts/crash-test (which runs >= 500 mails and >= 20
rounds and whose figures are in docs/reliability.md). After the rounds one
clean run finishes the work; then every mail must be stored once and decided
once, every acute mail answered at most once (the one allowed exception, a kill
between the SMTP server's acceptance and the row being marked sent, is counted
and reported), every case created once and the cursor at the highest UID.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from omo_mailbot.models import Message, OutboxMail

from .harness import append_all, audit, backlog, count_rows, kill, reliable_config_extra, start_run, stop, wait_for_log

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_MAILS = int(os.environ.get("OMO_CRASH_MAILS", "150"))
ROUNDS = int(os.environ.get("OMO_CRASH_ROUNDS", "6"))


def run_until_done(config_path, log_path, db_url, n_mails: int, timeout: float) -> bool:
    proc = start_run(config_path, log_path)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = (
                count_rows(db_url, Message) == n_mails
                and count_rows(db_url, OutboxMail, OutboxMail.status.in_(("pending", "sending"))) == 0
            )
            if done:
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.3)
        return False
    finally:
        assert stop(proc) == 0, log_path.read_text()[-3000:]


def test_sigkill_at_random_moments_loses_nothing_and_answers_nothing_twice(
    dovecot, mailbox_user, smtp_sink, make_config, db_url, tmp_path
):
    rng = random.Random(int(os.environ.get("OMO_CRASH_SEED", "20261130")))
    backlog_mails = backlog(N_MAILS, seed=rng.randrange(10**6))
    make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=reliable_config_extra())
    config_path, log_path = tmp_path / "config.toml", tmp_path / "run.log"
    # half the backlog is waiting at the first start; the rest arrives round by round
    first = N_MAILS // 2
    chunks = [backlog_mails[:first]] + [
        backlog_mails[first + i * (N_MAILS - first) // ROUNDS : first + (i + 1) * (N_MAILS - first) // ROUNDS]
        for i in range(ROUNDS)
    ]
    stored_at_kill = []
    for round_no in range(ROUNDS):
        append_all(dovecot, mailbox_user, [m.raw for m in chunks[round_no]])
        offset = log_path.stat().st_size if log_path.exists() else 0
        proc = start_run(config_path, log_path)
        try:
            assert wait_for_log(log_path, "mailbox open", 60, after=offset), log_path.read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 1.2))
        finally:
            kill(proc)
        stored_at_kill.append(count_rows(db_url, Message))
    append_all(dovecot, mailbox_user, [m.raw for m in chunks[ROUNDS]])
    assert run_until_done(config_path, log_path, db_url, N_MAILS, timeout=max(90.0, N_MAILS * 0.5)), (
        log_path.read_text()[-3000:]
    )

    result = audit(db_url, backlog_mails, [m.content for m in smtp_sink.messages])
    print(f"\ncrash test: {ROUNDS} kills, stored at each kill {stored_at_kill}; {result.summary()}")
    assert result.problems == []
    assert result.stored == N_MAILS and result.decided == N_MAILS and result.outbox_open == 0
    assert result.replies >= sum(1 for m in backlog_mails if m.kind == "acute") - result.resent_after_kill
    # the kills really landed while work was going on, not only before or after it
    assert any(0 < n < N_MAILS for n in stored_at_kill)
