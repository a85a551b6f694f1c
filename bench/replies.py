"""What building each outgoing mail and checking the reply brakes cost, in-process (no model, no SMTP).

    python -m bench.replies [N] [REPEAT]   # N generated acute mails (default 300), best of REPEAT runs (default 5)

Builds every message the service writes through ``outgoing`` — the acute reply,
the preparation acknowledgement, the duty alert, a command answer and a rules
alert — for N generated acute mails, and times ``autoreply.rate_limit_block`` on
an SQLite outbox holding one earlier reply per sender, and on PostgreSQL too when
OMO_BENCH_PG_ADMIN names a server's admin database (a scratch database
omo_bench_replies is made and dropped there). Prints milliseconds per call, best of
REPEAT runs (the minimum is the least disturbed by the machine); for the brakes also
the CPU time of this process, which on PostgreSQL leaves out the server's work.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import gen

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _best_ms(fn: Callable[[Any], Any], items: Sequence[Any], repeat: int, *, cpu: bool = False) -> float:
    clock = time.process_time if cpu else time.perf_counter
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        for x in items:
            fn(x)
        best = min(best, clock() - t0)
    return 1000 * best / len(items)


_PG_NAME = "omo_bench_replies"


def _fresh_pg(admin_url: str) -> str:
    """A new, empty database next to ``admin_url``'s (dropped first if a run left it)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {_PG_NAME}"))
        c.execute(text(f"CREATE DATABASE {_PG_NAME}"))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + _PG_NAME


def _drop_pg(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {_PG_NAME}"))
    admin.dispose()


def main(argv: list[str]) -> int:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from omo_mailbot import autoreply, commands, reload
    from omo_mailbot.config import AutoReplyConfig, Config, SmtpConfig
    from omo_mailbot.errors import Problem
    from omo_mailbot.guards import GuardPolicy, check
    from omo_mailbot.mail import parse
    from omo_mailbot.models import Base
    from omo_mailbot.outbox import enqueue
    from omo_mailbot.templating import Templates
    from omo_mailbot.text import new_text
    from omo_mailbot.verdict import Decision

    n = int(argv[0]) if argv else 300
    repeat = int(argv[1]) if len(argv) > 1 else 5
    templates = Templates(ROOT / "templates")
    smtp, ar, cfg = SmtpConfig(), AutoReplyConfig(), Config()
    policy = GuardPolicy(own_addresses=frozenset({smtp.from_address.lower()}))
    mails = [parse(gen.acute_mail(i, tag="replies")[0]) for i in range(n)]
    decisions = [
        Decision("acute", 9.0, 5.0, None, (), check(m, policy), new_text(m), "nl" if i % 4 else "en")
        for i, m in enumerate(mails)
    ]
    pairs = list(zip(mails, decisions, strict=True))
    problems = [Problem("rules/acute.toml", 3, "rules[0].pattern", "does not compile")] * 3

    def reply(p: tuple[Any, Decision], template: str = "acute_reply") -> bytes:
        mail, d = p
        assert d.guard.reply_to is not None
        return autoreply.build_reply(
            templates, smtp, ar, mail, d, d.guard.reply_to, "OMO-2026-0001", "maandag 2 november", NOW, template
        )[0]

    rows: list[tuple[str, float]] = [
        ("autoreply.build_reply (acute_reply, text + html)", _best_ms(reply, pairs, repeat)),
        ("autoreply.build_reply (preparation_ack)", _best_ms(lambda p: reply(p, "preparation_ack"), pairs, repeat)),
        (
            "autoreply.build_duty_alert",
            _best_ms(
                lambda p: autoreply.build_duty_alert(
                    templates, smtp, ar, p[0], p[1], "dienst@minbzk.nl", "OMO-2026-0001", "ja", NOW
                ),
                pairs,
                repeat,
            ),
        ),
        (
            "commands.build_reply",
            _best_ms(lambda m: commands.build_reply(templates, cfg, m, [], NOW), mails, repeat),
        ),
        (
            "reload.build_alert",
            _best_ms(
                lambda m: reload.build_alert(cfg, "ops@minbzk.nl", "ab" * 32, "cd" * 32, problems, NOW), mails, repeat
            ),
        ),
        (
            "  of which: rendering the acute_reply templates",
            _best_ms(
                lambda p: (
                    templates.render_text("acute_reply.nl.txt", _reply_context(p[1], smtp.from_address)),
                    templates.render_html("acute_reply.nl.html", _reply_context(p[1], smtp.from_address)),
                ),
                pairs,
                repeat,
            ),
        ),
    ]

    urls = [("SQLite", "sqlite://")]
    admin_url = os.environ.get("OMO_BENCH_PG_ADMIN")
    if admin_url:
        urls.append(("PostgreSQL", _fresh_pg(admin_url)))
    for label, url in urls:
        engine = create_engine(url)
        Base.metadata.create_all(engine)
        with Session(engine) as s:
            for i, m in enumerate(mails):
                assert m.from_ is not None
                enqueue(
                    s,
                    kind="auto_reply",
                    raw=b"x",
                    recipient=m.from_.addr,
                    message_id=f"<old-{i}@minbzk.nl>",
                    now=NOW - timedelta(hours=2),
                    thread_key=f"<old-thread-{i}@x>",
                )
            s.commit()

            def brakes(m: Any, s: Session = s) -> Any:
                return autoreply.rate_limit_block(s, ar, m.from_.addr, autoreply.thread_key(m), NOW)

            rows.append(
                (f"autoreply.rate_limit_block ({label}, {n} outbox rows), wall", _best_ms(brakes, mails, repeat))
            )
            rows.append(
                (
                    f"autoreply.rate_limit_block ({label}), CPU of this process",
                    _best_ms(brakes, mails, repeat, cpu=True),
                )
            )
        engine.dispose()
        if label == "PostgreSQL":
            _drop_pg(admin_url or "", url)
    width = max(len(name) for name, _ in rows)
    print(f"{n} generated acute mails, best of {repeat}; milliseconds per call, in-process")
    for name, ms in rows:
        print(f"{name:<{width}}  {ms:7.3f}")
    return 0


def _reply_context(d: Any, our_address: str) -> dict[str, Any]:
    name = d.guard.reply_to.name if d.guard.reply_to else ""
    return {
        "name": name,
        "reference": "OMO-2026-0001",
        "contact_day": "maandag 2 november",
        "next_working_day": "maandag 2 november",
        "our_address": our_address,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
