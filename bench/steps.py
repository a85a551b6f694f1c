"""What each step of the hot path costs per mail, in-process (no IMAP, no SMTP).

    python -m bench.steps [N]          # N generated mails (default 500), as in the backlog benchmark

Trains the model on the seed corpus into a temporary folder, builds the service
on a fresh SQLite database there, and times each step over the same N mails:
parsing, the parts of deciding, and storing them through the pipeline (one
transaction per mail, and one per batch of 50 as during a backlog). Prints a
table and writes bench/results/steps-<UTC time>.json. The profile of the
backlog run (``bench.run --profile``) shows the same split under a profiler.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench import gen
from bench.local_service import local_service

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
R = TypeVar("R")


def _per_mail(fn: Callable[[T], R], items: Sequence[T]) -> tuple[float, list[R]]:
    t0 = time.perf_counter()
    out = [fn(x) for x in items]
    return 1000 * (time.perf_counter() - t0) / len(items), out


def main(argv: list[str]) -> int:
    import mailparser

    from omo_mailbot.guards import check
    from omo_mailbot.mail import parse
    from omo_mailbot.mailbox import FetchedMail
    from omo_mailbot.text import language
    from omo_mailbot.verdict import decision_inputs

    n = int(argv[0]) if argv else 500
    mails = gen.backlog(n)
    service, engine = local_service("omo-steps-")
    decider = service.pipeline.decider
    assert decider.model is not None
    model_ = decider.model
    rows: list[tuple[str, float]] = []

    def step(name: str, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        ms, out = _per_mail(fn, items)
        rows.append((name, ms))
        return out

    step("mail-parser parse_from_bytes (as the floor)", lambda r: mailparser.parse_from_bytes(r).text_plain, mails)
    parsed = step("mail.parse (mail-parser + our fields)", parse, mails)
    inputs = step("  new text, quotes, signature", decision_inputs, parsed)
    step("  rules (shared scan)", lambda i: decider.rules.evaluate(i.context), inputs)
    step("  classifier", lambda i: model_.acute_probability([i.model_text]), inputs)
    step("  language", lambda i: language(i.split.new), inputs)
    step("  guards", lambda m: check(m, decider.policy), parsed)
    step("Decider.decide (all of the above but parsing)", decider.decide, parsed)
    one = [FetchedMail(uid=i + 1, raw=r, size=len(r)) for i, r in enumerate(mails)]
    step(
        "Pipeline.process: parse + decide + store, one transaction per mail",
        lambda f: service.pipeline.process("INBOX", 1, f),
        one,
    )
    # the same mails once more with other bytes (so they are not duplicates), in batches of 50
    again = [FetchedMail(uid=n + i + 1, raw=r + b"\r\n", size=len(r) + 2) for i, r in enumerate(mails)]
    batches = [again[k : k + 50] for k in range(0, n, 50)]
    ms, _ = _per_mail(lambda b: service.pipeline.process_batch("INBOX", 1, b), batches)
    rows.append(("Pipeline.process_batch: the same, one transaction per 50 mails", ms / 50))
    engine.dispose()
    mean_new = sum(len(i.split.new) for i in inputs) / n
    width = max(len(name) for name, _ in rows)
    print(f"{n} generated mails, mean new text {mean_new:.0f} characters; milliseconds per mail, in-process")
    for name, ms in rows:
        print(f"{name:<{width}}  {ms:7.3f}")
    out = ROOT / "bench" / "results" / f"steps-{datetime.now(UTC).strftime('%Y-%m-%dT%H%M%SZ')}.json"
    out.write_text(json.dumps({"n": n, "mean_new_text_chars": mean_new, "ms_per_mail": dict(rows)}, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
