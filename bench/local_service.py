"""The service built in-process on a throw-away folder, for the in-process measurements.

A model trained on the seed corpus, a fresh migrated SQLite database, the
Maildir source and file delivery (no IMAP, no SMTP), as ``bench.steps`` needs it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def local_service(prefix: str, *, log_level: str = "WARNING") -> tuple[Any, Any]:
    """``(service, engine)`` from ``build_service`` on a new temporary folder named ``prefix``..."""
    from omo_mailbot import classifier, db, training
    from omo_mailbot.config import default_config, load_config
    from omo_mailbot.service import build_service, training_set

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    model = tmp / "model.npz"
    classifier.save(training.train(*training_set(default_config(str(ROOT)))), model)
    url = f"sqlite:///{tmp / 'bench.db'}"
    db.upgrade(url)
    (tmp / "bench.toml").write_text(
        f'[database]\nurl = "{url}"\n[paths]\nrules_dir = "{ROOT / "rules"}"\n'
        f'templates_dir = "{ROOT / "templates"}"\nmodel_file = "{model}"\ncorpus_dir = "{ROOT / "corpus" / "seed"}"\n'
        f'[source]\nkind = "maildir"\nmaildir = "{tmp / "maildir"}"\n[delivery]\nkind = "files"\n'
        f'outdir = "{tmp / "out"}"\n[autoreply]\nglobal_max_per_hour = 1000000\n'
        f'[service]\nlog_level = "{log_level}"\n'
    )
    return build_service(load_config(str(tmp / "bench.toml")))
