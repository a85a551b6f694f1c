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
import tempfile
from pathlib import Path

from bench import gen

ROOT = Path(__file__).resolve().parent.parent


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
    from omo_mailbot import classifier, db
    from omo_mailbot.config import default_config, load_config
    from omo_mailbot.mail import parse
    from omo_mailbot.service import build_service, training_set

    n = int(argv[0]) if argv else 2000
    tmp = Path(tempfile.mkdtemp(prefix="omo-fork-"))
    model = tmp / "model.skops"
    classifier.save(classifier.train(*training_set(default_config(str(ROOT)))), model)
    url = f"sqlite:///{tmp / 'fork.db'}"
    db.upgrade(url)
    (tmp / "fork.toml").write_text(
        f'[database]\nurl = "{url}"\n[paths]\nrules_dir = "{ROOT / "rules"}"\n'
        f'templates_dir = "{ROOT / "templates"}"\nmodel_file = "{model}"\ncorpus_dir = "{ROOT / "corpus" / "seed"}"\n'
        f'[source]\nkind = "maildir"\nmaildir = "{tmp / "maildir"}"\n[delivery]\nkind = "files"\n'
        f'outdir = "{tmp / "out"}"\n[service]\nlog_level = "ERROR"\n'
    )
    service, _engine = build_service(load_config(str(tmp / "fork.toml")))
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
