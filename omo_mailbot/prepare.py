"""Parsing and deciding a backlog one batch ahead, in a second process.

During a backlog the service's process would otherwise do everything in turn:
fetch a batch, parse it, decide it, store it, and only then fetch the next.
Parsing and deciding are pure (no database, no network, no clock: see
:mod:`omo_mailbot.verdict`), and they are about half of the CPU a mail costs. So
for a long pass, :class:`Preparer` forks one worker process that parses and
decides batch k+1 while this process stores batch k and fetches batch k+2.

The worker is a fork of the service at the start of the pass: it decides with
the rules, model and guard policy of that moment, and each verdict records the
rules hash and model version that made it. When a reload replaces them during
the pass, the service stops the worker and decides the rest itself
(``Service._store_batch``).

Nothing depends on the worker. Whatever it cannot deliver (a mail it could not
parse or decide, a worker that died, hung past the timeout or could not be
started) comes back as ``None``, and the pipeline then does that mail itself,
in-process, exactly as without a worker: a broken mail gets its error case from
the same code path either way. Storing, answering and marking stay in this
process, so what is committed and when is the same with or without the worker.

The two sides alternate on one pipe and never write at the same time: the
service sends batch k+1 only after it has read the answer for batch k, while the
worker waits to read. (Two processes writing large messages to each other at
once would both block on a full pipe.)

The two sides share the work: when the service has to wait for the worker's
answer, the worker is the slower side, and the service keeps a few more mails of
each following batch to parse and decide itself; when the answer is already
there, the worker was idle, and it gets them back (:class:`Balance`). On two
cores this keeps both busy instead of one waiting for the other.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .mail import ParsedMail, parse
from .mailbox import FetchedMail
from .verdict import Decider, Decision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """One mail parsed and decided ahead; timings in milliseconds, for its log line."""

    mail: ParsedMail
    decision: Decision
    timings: dict[str, float]


def parse_and_decide(decider: Decider, raw: bytes) -> Prepared:
    """Parse and decide ``raw``, timing both; raises what parsing (ParseError) or deciding raises."""
    started = time.perf_counter()
    mail = parse(raw)
    parsed = time.perf_counter()
    decision = decider.decide(mail)
    return Prepared(mail, decision, {"parse_ms": ms(parsed - started), "decide_ms": ms(time.perf_counter() - parsed)})


def prepare(decider: Decider, raw: bytes) -> Prepared | None:
    """:func:`parse_and_decide` in the worker: None when it raises (the pipeline then does the mail
    itself, through the same function, and records why)."""
    try:
        return parse_and_decide(decider, raw)
    except Exception:
        return None


def ms(seconds: float) -> float:
    """Seconds as milliseconds with one decimal, as the log lines give timings."""
    return round(seconds * 1000, 1)


# A mail in the worker's hands exists three times (the service's batch, the pickled copy in the pipe and
# the worker's copy), so large mail stays with the service, and one batch sends at most BATCH_BYTES.
MAIL_BYTES = 1_000_000
BATCH_BYTES = 8_000_000


def _wanted(batch: Sequence[FetchedMail], kept: int = 0) -> list[bytes | None]:
    """Per mail, the bytes to send to the worker, or None for what the service keeps: the last ``kept``
    mails of the batch (its share of the work), a mail over its size limit or over ``MAIL_BYTES``, an
    empty body, and any mail that would take the batch's bytes past ``BATCH_BYTES``."""
    out: list[bytes | None] = []
    budget = BATCH_BYTES
    handed = len(batch) - kept
    for index, fetched in enumerate(batch):
        raw = fetched.raw
        keep = index >= handed or fetched.too_large or not raw or raw.isspace() or len(raw) > min(MAIL_BYTES, budget)
        out.append(None if keep else raw)
        if not keep:
            budget -= len(raw)
    return out


class Balance:
    """How many mails of each batch the service parses and decides itself, so that neither side waits.

    After each answer: if the service had to wait for it (longer than ``WAITED``), the worker is the
    slower side and the service keeps more mails of the following batches; if the answer was there
    before the service asked, the worker had been idle and gets some back. The step doubles while the
    answers keep pointing the same way and halves when they turn, so the share is found within a few
    batches of a pass and then moves by a mail or two around the point where both sides take as long.
    The service never keeps more than half a batch: it also stores, answers and fetches.
    """

    WAITED = 0.001  # seconds: less is the cost of the handover itself, not waiting

    def __init__(self) -> None:
        self.kept = 0  # mails at the end of each batch the service keeps for itself
        self.kept_in_all = 0  # over the pass, for the benchmark and the debug log
        self._step = 1
        self._last = 0  # +1: the service waited last time; -1: it did not
        self._same = 0  # answers in a row that pointed the same way
        self._turned = False  # whether the answers have changed direction yet

    def take(self, size: int) -> int:
        """The service's share of a batch of ``size`` mails about to be handed over."""
        share = min(self.kept, size // 2)
        self.kept_in_all += share
        return share

    def answered(self, waited: float, size: int) -> None:
        """Adjust after an answer for a batch of ``size`` mails that the service waited ``waited`` s for."""
        direction = 1 if waited > self.WAITED else -1
        if direction != self._last:
            self._step, self._same = max(1, self._step // 2), 1
        else:
            self._same += 1
            if self._same >= 3 or not self._turned:  # settled once: grow again only on a clear trend
                self._step = min(2 * self._step, max(1, size // 4))
        self._turned = self._turned or (self._last != 0 and direction != self._last)
        self._last = direction
        self.kept = min(max(self.kept + direction * self._step, 0), size // 2)


def _serve(conn: Connection, parent_end: Connection, decider: Decider, service_pid: int) -> None:  # pragma: no cover
    """The worker: answer each list of raw mails with a list of Prepared-or-None, until told to stop."""
    parent_end.close()  # else our own copy of the service's end would keep the pipe open when the service dies
    _die_with_parent(service_pid)
    # Ctrl-C, systemd's SIGTERM to the whole unit and SIGHUP (reload) are the service's to handle: it
    # stops us when its pass ends, and if it dies instead, our end of the pipe closes and we leave.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    gc.freeze()  # likewise here: the worker's collections leave the inherited objects alone
    while True:
        try:
            raws = conn.recv()
        except (EOFError, OSError):
            break
        if raws is None:
            break
        try:
            conn.send([None if raw is None else prepare(decider, raw) for raw in raws])
        except (BrokenPipeError, OSError):
            break
    os._exit(0)  # nothing of the service's (atexit hooks, threads, buffers) is ours to run or flush


def _die_with_parent(service_pid: int) -> None:  # pragma: no cover - in the fork
    """Ask Linux to kill us when the service dies. The closed pipe ends a waiting worker anyway, but a
    worker stuck in one mail would otherwise live on holding the service's inherited sockets and
    files (the metrics port, the leader's database connection)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the pipe is what ends us
    if os.getppid() != service_pid:  # the service died before the request took effect
        os._exit(0)


class Preparer:
    """One forked worker that parses and decides the next batch while the service stores this one.

    Use :meth:`ahead` on the pass's batches and :meth:`close` when the pass ends (or use it as a
    context manager). ``timeout`` bounds each wait for a batch's answer; a worker that overruns it is
    killed and the rest of the pass runs in-process.
    """

    def __init__(self, decider: Decider, *, timeout: float = 120.0, share: bool = True) -> None:
        self.decider = decider  # what the worker decides with: a reload replaces the service's, not this
        self.timeout = timeout
        self.balance = Balance() if share else None  # None: the worker gets every mail it can take
        self.broken: str | None = None
        self.peak_rss_mb: float | None = None
        self.private_mb: float | None = None
        self.cpu_seconds: float | None = None  # the worker's user + system time, read when it stops
        self._process: Any = None
        self._conn: Connection | None = None
        # Pages the two processes share stay shared only while neither writes to them. A full
        # collection here writes to the header of every object it visits, so this process would
        # copy most of its heap (and the worker's copy would count as the worker's own memory).
        # Objects that exist at the fork are frozen out of collection until the worker stops.
        gc.collect()
        gc.freeze()
        self._frozen = True
        try:
            context = multiprocessing.get_context("fork")
            conn, child_end = context.Pipe()
            process = context.Process(
                target=_serve, args=(child_end, conn, decider, os.getpid()), name="omo-prepare", daemon=True
            )
            process.start()
            child_end.close()
        except (OSError, ValueError) as exc:  # no fork here, out of processes or memory
            self._give_up(f"could not start: {exc}")
            return
        self._process, self._conn = process, conn

    def __enter__(self) -> Preparer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    def ahead(self, batches: Iterator[list[FetchedMail]]) -> Iterator[tuple[list[FetchedMail], list[Prepared | None]]]:
        """Each batch with what the worker made of it, the worker already busy with the next one."""
        current = next(batches, None)
        if current is None:
            return
        self._send(current)
        while True:
            try:
                following = next(batches, None)  # fetching it overlaps the worker's work on ``current``
            except BaseException:
                # A failed FETCH must not cost the batch already fetched and decided: it is stored
                # (and marked) first, as without the worker, and then the error goes up.
                yield current, self._receive(current)
                raise
            if following is None:
                break
            answers = self._receive(current)
            self._send(following)
            yield current, answers  # storing ``current`` overlaps the worker's work on ``following``
            current = following
        yield current, self._receive(current)

    def _send(self, batch: Sequence[FetchedMail]) -> None:
        if self._conn is None:
            return
        kept = self.balance.take(len(batch)) if self.balance is not None else 0
        try:
            self._conn.send(_wanted(batch, kept))
        except (OSError, ValueError) as exc:
            self._give_up(f"could not be sent a batch: {type(exc).__name__}: {exc}")

    def _receive(self, batch: Sequence[FetchedMail]) -> list[Prepared | None]:
        nothing: list[Prepared | None] = [None] * len(batch)
        if self._conn is None:
            return nothing
        try:
            waited = 0.0
            if not self._conn.poll():
                started = time.perf_counter()
                if not self._conn.poll(self.timeout):
                    self._give_up(f"gave no answer within {self.timeout:g} s")
                    return nothing
                waited = time.perf_counter() - started
            answers: list[Prepared | None] = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._give_up(f"stopped: {type(exc).__name__}")
            return nothing
        if len(answers) != len(batch):  # cannot happen with _serve; never pair answers with the wrong mails
            self._give_up(f"answered {len(answers)} mails for a batch of {len(batch)}")
            return nothing
        if self.balance is not None:
            self.balance.answered(waited, len(batch))
        return answers

    def _give_up(self, why: str) -> None:
        """From now on the service does all of it in-process; the worker, if any, is stopped."""
        if self.broken is None:
            self.broken = why
            log.warning("the worker that parses and decides ahead %s; going on in-process", why)
        self._stop(at_once=True)

    def close(self) -> None:
        """Stop the worker (politely first); record its memory for the benchmark and the debug log."""
        self._stop(at_once=False)

    def _stop(self, *, at_once: bool) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if self._frozen:
            gc.unfreeze()  # collectable again: a long-running service must not keep their garbage for ever
            self._frozen = False
        if process is None:
            return
        self._read_usage(int(process.pid))
        if conn is not None:
            if not at_once:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(None)
            conn.close()
        process.join(timeout=0.0 if at_once else 2.0)
        if process.is_alive():
            process.kill()
            process.join(timeout=2.0)
        log.debug(
            "worker stopped",
            extra={
                "peak_rss_mb": self.peak_rss_mb,
                "private_mb": self.private_mb,
                "cpu_seconds": self.cpu_seconds,
                "kept_by_the_service": self.balance.kept_in_all if self.balance is not None else 0,
            },
        )

    def _read_usage(self, pid: int) -> None:
        """The worker's peak RSS (pages shared with the service included), its private memory now, and the
        CPU it has used (for the benchmark: which of the two processes is the slower side)."""
        try:
            with open(f"/proc/{pid}/stat") as fh:
                # after the command name in parentheses: fields 14 and 15 of stat(5), utime and stime
                fields = fh.read().rsplit(")", 1)[1].split()
            self.cpu_seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_mb = int(line.split()[1]) / 1024
            private = 0
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        private += int(line.split()[1])
            self.private_mb = private / 1024
        except (OSError, ValueError, IndexError):
            pass
