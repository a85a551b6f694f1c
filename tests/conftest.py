"""Shared fixtures: real Dovecot and SMTP servers, a fresh database per test, a trained model."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omo_mailbot import classifier, db, training
from omo_mailbot.config import Config, load_config

from .servers import DovecotServer, SmtpSink

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("OMO_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
_users = itertools.count(1)


def pytest_report_header() -> str:
    return f"omo-mailbot test database: {os.environ.get('OMO_TEST_DB', 'sqlite')}"


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    srv = DovecotServer(users={"omo": "omo-secret"})
    srv.start()  # never skipped: a server that cannot start fails the run
    yield srv
    srv.cleanup()


@pytest.fixture
def mailbox_user(dovecot: DovecotServer) -> str:
    """A fresh mailbox per test, so tests never see each other's mail."""
    name = f"u{next(_users)}{uuid.uuid4().hex[:6]}"
    dovecot.add_user(name, "pw-" + name)
    client = dovecot.client(name)  # waits until the passwd-file was re-read
    client.select_folder("INBOX")  # creates the Maildir
    client.logout()
    return name


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: SQLite by default, PostgreSQL when OMO_TEST_DB=postgresql."""
    if os.environ.get("OMO_TEST_DB", "sqlite") == "postgresql":
        from sqlalchemy import create_engine, text

        name = f"omo_test_{uuid.uuid4().hex[:12]}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        db.upgrade(url)
        yield url
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        url = f"sqlite:///{tmp_path / 'omo.db'}"
        db.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classifier trained once per run on the seed corpus (train split)."""
    from omo_mailbot.config import default_config
    from omo_mailbot.service import training_set

    cfg = default_config(str(ROOT))
    texts, labels = training_set(cfg)
    path = tmp_path_factory.mktemp("model") / "omo-classifier.npz"
    classifier.save(training.train(texts, labels), path)
    return path


def write_config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


@pytest.fixture
def make_config(tmp_path: Path, db_url: str, model_file: Path) -> Any:
    """Build a Config for a test: IMAP user + SMTP sink, or the local variants, plus overrides."""

    def build(
        *, dovecot: DovecotServer | None = None, user: str | None = None, sink: SmtpSink | None = None, extra: str = ""
    ) -> Config:
        lines = [
            "[database]",
            f'url = "{db_url}"',
            "[paths]",
            f'rules_dir = "{ROOT / "rules"}"',
            f'templates_dir = "{ROOT / "templates"}"',
            f'model_file = "{model_file}"',
            f'corpus_dir = "{ROOT / "corpus" / "seed"}"',
            "[service]",
            'log_format = "text"',
            "outbox_poll_seconds = 30",
            "[alerts]",
            'duty_address = "dienst@omo.example"',
        ]
        if dovecot is not None and user is not None:
            os.environ[f"OMO_TEST_PW_{user}"] = dovecot.users[user]
            lines += [
                "[imap]",
                'host = "127.0.0.1"',
                f"port = {dovecot.port}",
                'security = "none"',
                f'username = "{user}"',
                f'password_env = "OMO_TEST_PW_{user}"',
                "poll_interval_seconds = 600",
                "idle_renew_seconds = 600",
                "read_timeout_seconds = 30",
            ]
        else:
            lines += ["[source]", 'kind = "maildir"', f'maildir = "{ROOT / "sample" / "mailbox"}"']
        if sink is not None:
            lines += [
                "[smtp]",
                'host = "127.0.0.1"',
                f"port = {sink.port}",
                'security = "none"',
                'auth = "none"',
                "backoff_base_seconds = 0.2",
                "backoff_max_seconds = 1.0",
            ]
        text = "\n".join(lines) + "\n" + extra
        return write_config(tmp_path, _merge_tables(text))

    return build


def _merge_tables(text: str) -> str:
    """Let ``extra`` repeat a table header: later keys join the earlier table of the same name."""
    import tomllib

    from omo_mailbot.tomlfile import parse

    merged: dict[str, dict[str, Any]] = {}
    current = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("[") and not s.startswith("[["):
            current = s.strip("[]")
            merged.setdefault(current, {})
        elif "=" in s and current:
            merged[current].update(tomllib.loads(s))
    out = []
    for table, values in merged.items():
        out.append(f"[{table}]")
        for k, v in values.items():
            out.append(f"{k} = {_toml_value(v)}")
    parse("\n".join(out), "generated")
    return "\n".join(out) + "\n"


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)
