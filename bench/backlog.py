"""The backlog measurements, each in a fresh Python process (so VmHWM is this run's peak).

    python -m bench.backlog floor PORT USER PASSWORD [BATCH]
    python -m bench.backlog decide CONFIG [BATCH]
    python -m bench.backlog pipeline CONFIG [--profile OUT.txt]

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


def peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would include a forking parent's peak)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine_busy_seconds() -> float:
    """CPU seconds all processes on this machine have spent so far (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class CpuClock:
    """CPU spent between start and stop: by this process, and by the whole machine (Dovecot and the sink too)."""

    def __init__(self) -> None:
        self.own = time.process_time()
        self.machine = machine_busy_seconds()

    def stop(self, n: int) -> dict[str, float]:
        own = time.process_time() - self.own
        machine = machine_busy_seconds() - self.machine
        return {
            "cpu_own_seconds": own,
            "cpu_machine_seconds": machine,
            "cpu_machine_ms_per_mail": 1000 * machine / max(n, 1),
        }


def _read_inbox(client: Any, batch: int, each: Callable[[bytes], None]) -> dict[str, Any]:
    """The timed part both readers share: EXAMINE INBOX, SEARCH ALL, UID FETCH BODY.PEEK[] in batches of
    ``batch``, ``each`` called on every body; then its count, rate, peak RSS and CPU. Logs the client out."""
    baseline = peak_rss_mb()
    t0 = time.perf_counter()
    cpu = CpuClock()
    client.select_folder("INBOX", readonly=True)
    uids = client.search("ALL")
    n = 0
    for start in range(0, len(uids), batch):
        for _uid, data in client.fetch(uids[start : start + batch], ["BODY.PEEK[]"]).items():
            each(data[b"BODY[]"])
            n += 1
    took = time.perf_counter() - t0
    used = cpu.stop(n)
    client.logout()
    return {"n": n, "seconds": took, "rate": n / took, "rss_mb": peak_rss_mb(), "rss_base": baseline, **used}


def floor(port: int, user: str, password: str, batch: int = 100) -> dict[str, Any]:
    """imapclient BODY.PEEK[] in batches plus mail-parser: the least any reader must do."""
    import imapclient
    import mailparser

    client = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=60)
    client.login(user, password)
    size = 0

    def parse(raw: bytes) -> None:
        nonlocal size
        parsed = mailparser.parse_from_bytes(raw)
        _ = (parsed.subject, parsed.from_, parsed.text_plain)
        size += len(raw)

    result = _read_inbox(client, batch, parse)
    return {**result, "mb": size / 1e6}


def decide(config: str, batch: int = 100) -> dict[str, Any]:
    """The floor plus deciding: the service's parse and Decider on each mail, nothing stored or sent.

    Not a target, a yardstick: what the pipeline could reach if writing to the
    database, answering and marking cost nothing.
    """
    import imapclient

    from omo_mailbot.config import load_config
    from omo_mailbot.mail import parse
    from omo_mailbot.service import build_decider

    cfg = load_config(config)
    decider = build_decider(cfg)
    client = imapclient.IMAPClient(cfg.imap.host, port=cfg.imap.port, ssl=False, timeout=60)
    client.login(cfg.imap.username, os.environ[cfg.imap.password_env])
    labels = {"acute": 0, "preparation": 0, "automated": 0}

    def count(raw: bytes) -> None:
        labels[decider.decide(parse(raw)).label] += 1

    return {**_read_inbox(client, batch, count), "labels": labels}


def pipeline(config: str, profile: str | None = None) -> dict[str, Any]:
    """build_service + Service.ingest_pass on a fresh database, with the outbox thread sending meanwhile
    (as in ``run``); the clock stops when the last reply has been accepted by the SMTP sink."""
    from sqlalchemy import func, select

    from omo_mailbot import logs
    from omo_mailbot.config import load_config
    from omo_mailbot.models import OutboxMail, Verdict
    from omo_mailbot.service import build_service

    cfg = load_config(config)
    logs.setup(cfg.service.log_level, "json")  # as in production: one JSON line per decision (stderr)
    t0 = time.perf_counter()
    service, engine = build_service(cfg)
    service.pipeline.warm_up()  # as `run` does before its first pass: start-up work is not per-mail work
    built = time.perf_counter() - t0
    baseline = peak_rss_mb()
    profiler: Any = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
        profiler.start()
    t1 = time.perf_counter()
    cpu = CpuClock()
    # As in `run`: the outbox thread sends while the backlog is stored (woken at each commit).
    sender = threading.Thread(target=service.outbox_forever, name="outbox", daemon=True)
    sender.start()
    uidvalidity = service.source.open()
    n = service.ingest_pass(uidvalidity)
    service.source.close()
    t2 = time.perf_counter()
    unsent = _wait_until_sent(service, deadline=time.monotonic() + 300)
    t3 = time.perf_counter()
    service.state.stop.set()
    service.state.outbox_wake.set()
    sender.join(timeout=30)
    if unsent:
        raise SystemExit(f"{unsent} replies still unsent after 300 s: the figure would be wrong")
    used = cpu.stop(n)
    if profiler is not None and profile:
        profiler.stop()
        with open(profile, "w") as fh:
            fh.write(profiler.output_text(unicode=True, color=False))
    with service.sessions() as s:
        labels = dict(s.execute(select(Verdict.label, func.count()).group_by(Verdict.label)).all())
        outbox = dict(s.execute(select(OutboxMail.status, func.count()).group_by(OutboxMail.status)).all())
    engine.dispose()
    worker = service.state.preparer  # the decide-ahead worker (stopped), if the pass used one
    return {
        "n": n,
        "seconds": t3 - t1,
        "rate": n / (t3 - t1),
        "ingest_seconds": t2 - t1,
        "drain_seconds": t3 - t2,
        "startup_seconds": built,
        "labels": labels,
        "outbox": outbox,
        "rss_mb": peak_rss_mb(),
        "rss_base": baseline,
        "worker_peak_rss_mb": worker.peak_rss_mb if worker else None,
        "worker_private_mb": worker.private_mb if worker else None,
        "worker_cpu_seconds": worker.cpu_seconds if worker else None,
        "kept_by_the_service": worker.balance.kept_in_all if worker and worker.balance else None,
        **used,
    }


def _wait_until_sent(service: Any, deadline: float) -> int:
    """Wait (bounded) until the outbox thread has sent every queued reply; how many are left."""
    from sqlalchemy import func, select

    from omo_mailbot.models import OutboxMail

    while True:
        with service.sessions() as s:
            left = int(
                s.execute(
                    select(func.count()).select_from(OutboxMail).where(OutboxMail.status.in_(("pending", "sending")))
                ).scalar_one()
            )
        if left == 0 or time.monotonic() > deadline:
            return left
        service.state.outbox_wake.set()
        time.sleep(0.02)


def main(argv: list[str]) -> int:
    if argv[0] == "floor":
        result = floor(int(argv[1]), argv[2], argv[3], int(argv[4]) if len(argv) > 4 else 100)
    elif argv[0] == "decide":
        result = decide(argv[1], int(argv[2]) if len(argv) > 2 else 100)
    elif argv[0] == "pipeline":
        profile = argv[argv.index("--profile") + 1] if "--profile" in argv else None
        result = pipeline(argv[1], profile)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: it adds nothing to the figures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
