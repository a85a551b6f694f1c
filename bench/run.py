"""omo-mailbot benchmarks against a throw-away Dovecot and an aiosmtpd sink on loopback.

    .venv/bin/python -m bench.run                  # N=5000 and N=1000, 60 latency trials
    .venv/bin/python -m bench.run --n 1000 --trials 50 --profile

Prints a table and writes bench/results/<UTC date and time>.json. See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.servers import DovecotServer, SmtpSink

from . import gen, latency

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    dovecot = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "dovecot": dovecot,
        "loadavg_at_start": list(os.getloadavg()),
    }


def load_maildir(srv: DovecotServer, user: str, mails: list[bytes]) -> float:
    """Write mails straight into Maildir/new (chowned) and time the first SELECT that indexes them."""
    client = srv.client(user)
    client.select_folder("INBOX")
    client.logout()
    box = srv.root / "mail" / user / "Maildir"
    t0 = time.perf_counter()
    for i, raw in enumerate(mails):
        tmp = box / "tmp" / f"{1700000000 + i}.M{i}P{os.getpid()}.bench"
        tmp.write_bytes(raw)
        os.chown(tmp, srv.uid, srv.gid)
        tmp.rename(box / "new" / tmp.name)
    client = srv.client(user)
    client.select_folder("INBOX", readonly=True)
    client.logout()
    return time.perf_counter() - t0


def write_config(
    tmp: Path, name: str, srv: DovecotServer, user: str, sink: SmtpSink, model: Path, *, decide_ahead: bool = True
) -> Path:
    from omo_mailbot import db

    url = f"sqlite:///{tmp / (name + '.db')}"
    db.upgrade(url)
    os.environ[f"OMO_BENCH_PW_{user}"] = srv.users[user]
    text = f"""
[database]
url = "{url}"
[paths]
rules_dir = "{ROOT / "rules"}"
templates_dir = "{ROOT / "templates"}"
model_file = "{model}"
corpus_dir = "{ROOT / "corpus" / "seed"}"
[imap]
host = "127.0.0.1"
port = {srv.port}
security = "none"
username = "{user}"
password_env = "OMO_BENCH_PW_{user}"
[smtp]
host = "127.0.0.1"
port = {sink.port}
security = "none"
auth = "none"
max_per_minute = 10000
[autoreply]
global_max_per_hour = 1000000
[service]
log_format = "json"
log_level = "INFO"
outbox_poll_seconds = 30
decide_ahead = {"true" if decide_ahead else "false"}
"""
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


def child(args: list[str], log: Path, spy: Path | None = None) -> dict[str, Any]:
    """Run one ``bench.backlog`` step in its own process; with ``spy``, under py-spy (every thread and the
    decide-ahead worker, on-CPU samples only), its collapsed stacks written to that file."""
    prefix: list[str] = []
    if spy is not None:
        exe = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        if not Path(exe).exists():
            raise SystemExit("--py-spy needs py-spy: .venv/bin/pip install py-spy")
        prefix = [exe, "record", "--subprocesses", "--rate", "200", "--format", "raw", "--output", str(spy), "--"]
    with log.open("ab") as err:
        out = subprocess.run(
            [*prefix, PY, "-m", "bench.backlog", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            check=True,
            timeout=1800,
        )
    # py-spy prints its own lines on stdout after ours; the figures are the last JSON line
    lines = [ln for ln in out.stdout.decode().splitlines() if ln.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def bench_backlog(
    srv: DovecotServer, sink: SmtpSink, tmp: Path, model: Path, n: int, profile: bool, spy: bool = False
) -> dict[str, Any]:
    user = f"backlog{n}"
    srv.add_user(user, f"pw-{user}")
    mails = gen.backlog(n)
    loaded = load_maildir(srv, user, mails)
    floor = child(["floor", str(srv.port), user, srv.users[user], "100"], tmp / "floor.log")
    cfg = write_config(tmp, f"backlog{n}", srv, user, sink, model)
    decided = child(["decide", str(cfg), "100"], tmp / "decide.log")
    args = ["pipeline", str(cfg)]
    if profile:
        args += ["--profile", str(ROOT / "bench" / "results" / f"profile-backlog-{n}.txt")]
    before = len(sink.messages)
    spied = ROOT / "bench" / "results" / f"pyspy-backlog-{n}.txt" if spy else None
    pipe = child(args, tmp / f"pipeline-{n}.log", spied)
    pipe["smtp_received"] = len(sink.messages) - before
    # the same pipeline without the worker that parses and decides ahead (service.decide_ahead = false)
    alone_cfg = write_config(tmp, f"backlog{n}-alone", srv, user, sink, model, decide_ahead=False)
    alone = child(["pipeline", str(alone_cfg)], tmp / f"pipeline-{n}-alone.log")
    return {
        "n": n,
        "mb": sum(map(len, mails)) / 1e6,
        "load_seconds": loaded,
        "floor": floor,
        "decide": decided,
        "pipeline": pipe,
        "pipeline_in_process": alone,
        "ratio": pipe["rate"] / floor["rate"],
        "ratio_in_process": alone["rate"] / floor["rate"],
        "profiled": profile or spy,  # True: the pipeline ran under a profiler, its rate is not a benchmark figure
    }


def bench_latency(srv: DovecotServer, tmp: Path, model: Path, trials: int) -> dict[str, Any]:
    from omo_mailbot.classifier import load
    from omo_mailbot.config import load_config
    from omo_mailbot.service import ServiceState, build_service

    # the floor
    sink = SmtpSink().start()
    srv.add_user("floor", "pw-floor")
    srv.client("floor").logout()
    with latency.FloorResponder(srv.port, "floor", "pw-floor", sink.port, load(model)):
        floor_ms = latency.trials(srv, "floor", sink, trials, "floor")
    sink.stop()
    # the service, in IDLE, in a thread of this process
    sink = SmtpSink().start()
    srv.add_user("service", "pw-service")
    c = srv.client("service")
    c.select_folder("INBOX")
    c.logout()
    cfg = load_config(write_config(tmp, "latency", srv, "service", sink, model))
    state = ServiceState()
    service, engine = build_service(cfg, state=state)
    runner = threading.Thread(target=service.run_forever, name="service", daemon=True)
    runner.start()
    deadline = time.monotonic() + 20
    while not state.last_poll_ok and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into IDLE
    try:
        service_ms = latency.trials(srv, "service", sink, trials, "service")
    finally:
        state.stop.set()
        state.outbox_wake.set()
        runner.join(timeout=15)
        engine.dispose()
        sink.stop()
    floor_s, service_s = latency.summary(floor_ms), latency.summary(service_ms)
    return {
        "floor": floor_s,
        "service": service_s,
        "p95_over_floor_ms": service_s["p95"] - floor_s["p95"],
        "floor_ms": floor_ms,
        "service_ms": service_ms,
    }


def bench_decisions(tmp: Path, model: Path) -> dict[str, Any]:
    """explain --json over the seed corpus (a CLI run, start-up included, and in-process), and training."""
    from omo_mailbot import classifier, training
    from omo_mailbot.config import default_config
    from omo_mailbot.corpus import iter_eml
    from omo_mailbot.explain import explain_mail
    from omo_mailbot.mail import parse
    from omo_mailbot.service import build_decider, training_set

    cfg_path = tmp / "explain.toml"
    cfg_path.write_text(
        f'[paths]\nrules_dir = "{ROOT / "rules"}"\nmodel_file = "{model}"\ncorpus_dir = "{ROOT / "corpus" / "seed"}"\n'
        f'templates_dir = "{ROOT / "templates"}"\n[decision]\nauto_train = false\n[imap]\nusername = "bench"\n'
    )
    seed = ROOT / "corpus" / "seed"
    files = [f for f in iter_eml([seed]) if f.suffix == ".eml"]
    t0 = time.perf_counter()
    out = subprocess.run(
        [PY, "-m", "omo_mailbot.cli", "--config", str(cfg_path), "explain", "--json", str(seed)],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=600,
    )
    cli_seconds = time.perf_counter() - t0
    lines = [ln for ln in out.stdout.decode().splitlines() if ln.startswith("{") and '"error"' not in ln[:200]]
    cfg = default_config(str(ROOT))
    decider = build_decider(cfg, model=classifier.load(model))
    raws = [f.read_bytes() for f in files]
    t1 = time.perf_counter()
    for raw in raws:
        explain_mail(decider, parse(raw))
    inproc = time.perf_counter() - t1
    t2 = time.perf_counter()
    texts, labels = training_set(cfg)
    prepared = time.perf_counter() - t2
    t3 = time.perf_counter()
    training.train(texts, labels)
    trained = time.perf_counter() - t3
    return {
        "mails": len(files),
        "cli_records": len(lines),
        "cli_seconds": cli_seconds,
        "cli_rate": len(lines) / cli_seconds,
        "inprocess_seconds": inproc,
        "inprocess_rate": len(raws) / inproc,
        "train_texts": len(texts),
        "train_prepare_seconds": prepared,
        "train_seconds": trained,
    }


def cpu_rows(n: int, floor: dict[str, Any], pipe: dict[str, Any], cores: int) -> list[tuple[str, str, str, str]]:
    """CPU per mail across the machine, and the best ratio any use of all cores could give for that work."""
    if "cpu_machine_ms_per_mail" not in pipe:
        return []
    floor_ms = 1000 / floor["rate"]
    bound = floor_ms / (pipe["cpu_machine_ms_per_mail"] / cores)
    rows = [
        (f"backlog N={n}: CPU per mail, all processes, floor", f"{floor['cpu_machine_ms_per_mail']:.2f}", "ms", ""),
        (f"backlog N={n}: CPU per mail, all processes, pipeline", f"{pipe['cpu_machine_ms_per_mail']:.2f}", "ms", ""),
        (f"backlog N={n}: ratio if that CPU were spread over {cores} cores", f"{bound:.2f}", "ratio", "upper bound"),
    ]
    # which side is slower: the service's own process (storing, answering, sending) or the worker
    wall_ms = 1000 * pipe["seconds"] / pipe["n"]
    own_ms = 1000 * pipe["cpu_own_seconds"] / pipe["n"]
    rows.append((f"backlog N={n}: CPU per mail, service process", f"{own_ms:.2f}", "ms", f"wall {wall_ms:.2f} ms"))
    if pipe.get("worker_cpu_seconds") is not None:
        worker_ms = 1000 * pipe["worker_cpu_seconds"] / pipe["n"]
        rows.append((f"backlog N={n}: CPU per mail, decide-ahead worker", f"{worker_ms:.2f}", "ms", ""))
    if pipe.get("kept_by_the_service") is not None:
        share = 100 * pipe["kept_by_the_service"] / pipe["n"]
        rows.append((f"backlog N={n}: parsed and decided by the service itself", f"{share:.0f}", "%", "balance"))
    return rows


def in_process_rows(n: int, b: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The same pipeline with service.decide_ahead = false: everything in the service's one process."""
    if "pipeline_in_process" not in b:
        return []
    alone = b["pipeline_in_process"]
    return [
        (f"backlog N={n}: full pipeline, all in one process", f"{alone['rate']:.0f}", "mails/s", "decide_ahead off"),
        (f"backlog N={n}: that pipeline / floor", f"{b['ratio_in_process']:.2f}", "ratio", ""),
    ]


def worker_rows(n: int, p: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The worker that decided ahead: its own (unshared) memory when it stopped, and its peak RSS."""
    if p.get("worker_private_mb") is None:
        return []
    return [
        (f"backlog N={n}: decide-ahead worker, private memory", f"{p['worker_private_mb']:.0f}", "MB", "at its end"),
        (f"backlog N={n}: decide-ahead worker, peak RSS", f"{p['worker_peak_rss_mb']:.0f}", "MB", "mostly shared"),
    ]


def table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    for b in result["backlog"]:
        n, f, p = b["n"], b["floor"], b["pipeline"]
        profiled = " (pipeline ran under the profiler: not a figure)" if b.get("profiled") else ""
        rows += [
            (f"backlog N={n}: raw floor (FETCH BODY.PEEK[] x100 + mail-parser)", f"{f['rate']:.0f}", "mails/s", ""),
            (f"backlog N={n}: floor + parse + decide, nothing stored", f"{b['decide']['rate']:.0f}", "mails/s", ""),
            (f"backlog N={n}: (floor + decide) / floor", f"{b['decide']['rate'] / f['rate']:.2f}", "ratio", ""),
            (f"backlog N={n}: full pipeline (stored, decided, every reply sent)", f"{p['rate']:.0f}", "mails/s", ""),
            (f"backlog N={n}: pipeline / floor", f"{b['ratio']:.2f}", "ratio", "target >= 0.5" + profiled),
            *cpu_rows(n, f, p, result["machine"]["cores"]),
            *in_process_rows(n, b),
            (f"backlog N={n}: peak RSS of the pipeline process (VmHWM)", f"{p['rss_mb']:.0f}", "MB", "target < 250"),
            *worker_rows(n, p),
            (f"backlog N={n}: peak RSS of the floor process (VmHWM)", f"{f['rss_mb']:.0f}", "MB", ""),
        ]
    if "latency" in result:
        lat = result["latency"]
        for who in ("floor", "service"):
            s = lat[who]
            rows.append(
                (
                    f"acute latency, {who}: p50 / p95 / max (n={s['n']})",
                    f"{s['p50']:.0f} / {s['p95']:.0f} / {s['max']:.0f}",
                    "ms",
                    "",
                )
            )
        rows.append(
            ("acute latency: service p95 - floor p95", f"{lat['p95_over_floor_ms']:.0f}", "ms", "target <= 150")
        )
    if "decisions" in result:
        d = result["decisions"]
        rows += [
            (
                f"explain --json on corpus/seed ({d['mails']} mails), CLI incl. start-up",
                f"{d['cli_rate']:.0f}",
                "mails/s",
                "",
            ),
            ("explain (parse + decide with explanation), in-process", f"{d['inprocess_rate']:.0f}", "mails/s", ""),
            (f"training on {d['train_texts']} texts (fit and export)", f"{d['train_seconds']:.1f}", "s", ""),
        ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{width}}  {'value':>17}  unit     note", "-" * (width + 40)]
    lines += [f"{a:<{width}}  {b:>17}  {c:<8} {d}" for a, b, c, d in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, action="append", help="backlog sizes (default 5000 and 1000)")
    ap.add_argument("--trials", type=int, default=60, help="acute latency trials per side (default 60)")
    ap.add_argument("--profile", action="store_true", help="pyinstrument profile of the largest backlog run")
    ap.add_argument(
        "--py-spy",
        action="store_true",
        help="py-spy (all threads and the worker, collapsed stacks) of the largest backlog run's pipeline",
    )
    ap.add_argument("--skip", action="append", default=[], choices=["backlog", "latency", "decisions"])
    args = ap.parse_args(argv)
    sizes = sorted(set(args.n or [1000, 5000]))
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(PY).name, "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "backlog": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="omo-bench-"))
    os.chmod(tmp, 0o755)
    srv = DovecotServer(users={"omo": "omo-secret"})
    srv.start()
    sink = SmtpSink().start()
    try:
        from omo_mailbot import classifier, training
        from omo_mailbot.config import default_config
        from omo_mailbot.service import training_set

        model = tmp / "model.npz"
        texts, labels = training_set(default_config(str(ROOT)))
        classifier.save(training.train(texts, labels), model)
        if "backlog" not in args.skip:
            for n in sizes:
                print(f"backlog N={n} ...", file=sys.stderr, flush=True)
                result["backlog"].append(
                    bench_backlog(
                        srv, sink, tmp, model, n, args.profile and n == sizes[-1], args.py_spy and n == sizes[-1]
                    )
                )
        if "latency" not in args.skip:
            print(f"acute latency, {args.trials} trials each ...", file=sys.stderr, flush=True)
            result["latency"] = bench_latency(srv, tmp, model, args.trials)
        if "decisions" not in args.skip:
            print("explain and training ...", file=sys.stderr, flush=True)
            result["decisions"] = bench_decisions(tmp, model)
    finally:
        sink.stop()
        srv.cleanup()
    result["wall_seconds"] = (datetime.now(UTC) - started).total_seconds()
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    out = ROOT / "bench" / "results" / f"{started.strftime('%Y-%m-%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten to {out.relative_to(ROOT)} (wall {result['wall_seconds']:.0f} s); logs in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
