"""Every message of ../shared/corpora/mail (real-world broken, odd and hostile mail) goes through the service.

No crash, every one stored, and each either decided or a case that needs a
human, with its error. Without ../shared the test is skipped, except in CI
where the corpus must be there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from omo_mailbot.models import Case, Message, Verdict
from omo_mailbot.service import build_service

from .conftest import IN_CI, SHARED

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CORPUS = SHARED / "corpora" / "mail"


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        if IN_CI:
            pytest.fail(f"{CORPUS} is missing; CI needs the shared mail corpus")
        pytest.skip(f"{CORPUS} is not here")
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name != "SOURCES.md" and "mbox" not in p.relative_to(CORPUS).parts[:1]
    )


def test_every_corpus_mail_is_stored_and_decided_or_handed_to_a_human(dovecot, mailbox_user, smtp_sink, make_config):
    files = corpus_files()
    assert len(files) > 400
    client = dovecot.client(mailbox_user)
    refused = []
    for path in files:
        try:
            client.append("INBOX", path.read_bytes())
        except Exception as exc:  # the server's verdict, not ours: report it below
            refused.append(f"{path.relative_to(CORPUS)}: {exc}")
    client.select_folder("INBOX", readonly=True)
    on_server = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
    client.logout()
    server_hashes = {hashlib.sha256(bytes(v[b"BODY[]"])).hexdigest() for v in on_server.values()}
    assert len(refused) < len(files) // 20, refused

    cfg = make_config(
        dovecot=dovecot,
        user=mailbox_user,
        sink=smtp_sink,
        extra="[autoreply]\nenabled = false\n[imap]\nbatch_size = 100\n",
    )
    service, engine = build_service(cfg)
    service.run_once()
    with service.sessions() as s:
        rows = s.execute(select(Message.id, Message.sha256, Message.status, Message.error, Message.case_id)).all()
        decided = set(s.execute(select(Verdict.message_id)).scalars())
        cases = {c.id: c for c in s.execute(select(Case)).scalars()}
    engine.dispose()

    assert {r.sha256 for r in rows} == server_hashes  # every distinct mail stored, exactly once
    assert len(rows) == len(server_hashes)
    unhandled = []
    for r in rows:
        if r.status == "decided" and r.id in decided:
            continue
        case = cases.get(r.case_id or -1)
        if r.status in ("parse_failed", "too_large", "error") and r.error and case is not None and case.needs_human:
            continue
        unhandled.append((r.id, r.status, (r.error or "")[:200]))
    assert unhandled == []
    crashed = [r for r in rows if r.status == "error"]
    print(
        f"\ncorpus: {len(files)} files, {len(refused)} refused by Dovecot, {len(rows)} distinct stored, "
        f"{len(decided)} decided, {sum(r.status == 'parse_failed' for r in rows)} unparseable, "
        f"{len(crashed)} failed in processing"
    )
    assert crashed == [], [r.error.splitlines()[-1] for r in crashed if r.error]
