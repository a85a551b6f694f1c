"""What a second, forked process for deciding would cost in memory (an experiment, not a benchmark).

    python -m bench.fork_memory [N]     # N generated mails decided in the child (default 2000)

Builds the service as production does, forks, lets the child parse and decide N
generated mails, and prints both processes' RSS and PSS and the child's private
memory from /proc/<pid>/smaps_rollup (Linux only). Both share the model and the
libraries copy-on-write; what the child writes to becomes its own.
"""

from __future__ import annotations

import os
import sys

from bench import gen
from bench.local_service import local_service


def rollup(pid: int) -> dict[str, float]:
    """The kB lines of smaps_rollup, in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return out


def main(argv: list[str]) -> int:
    from omo_mailbot.mail import parse

    n = int(argv[0]) if argv else 2000
    service, _engine = local_service("omo-fork-", log_level="ERROR")
    decider = service.pipeline.decider
    mails = gen.backlog(n)
    decider.decide(parse(mails[0]))  # the parent has decided before, as a running service has
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:
        for raw in mails:
            decider.decide(parse(raw))
        os.write(ready_w, b"x")
        os.read(done_r, 1)  # stay alive until the parent has read our memory
        os._exit(0)
    os.read(ready_r, 1)
    parent, forked = rollup(os.getpid()), rollup(child)
    os.write(done_w, b"x")
    os.waitpid(child, 0)
    private = forked["Private_Clean"] + forked["Private_Dirty"]
    print(f"parent (holding the {n} generated mails too): RSS {parent['Rss']:.0f} MB, PSS {parent['Pss']:.0f} MB")
    print(f"child after deciding {n} mails: RSS {forked['Rss']:.0f} MB, PSS {forked['Pss']:.0f} MB,", end=" ")
    print(f"private {private:.0f} MB")
    print(f"both: PSS {parent['Pss'] + forked['Pss']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
