"""The command line as an operator meets it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omo_mailbot.cli import main
from omo_mailbot.service import training_set

from . import mails
from .rosterkit import ROSTER, write_roster

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cfg_path(tmp_path: Path, make_config) -> Path:
    make_config()
    return tmp_path / "config.toml"


def test_explain_json_gives_one_object_per_mail_and_goes_on_after_an_unreadable_file(tmp_path, cfg_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "1-acute.eml").write_bytes(mails.acute())
    (folder / "2-prep.eml").write_bytes(mails.preparation())
    (folder / "3-ooo.eml").write_bytes(mails.acute(headers={"Auto-Submitted": "auto-replied"}))
    (folder / "4-empty.eml").write_bytes(b"")
    assert main(["--config", str(cfg_path), "explain", "--json", str(folder)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["path"]).name for r in records] == ["1-acute.eml", "2-prep.eml", "3-ooo.eml", "4-empty.eml"]
    acute, prep, ooo, empty = records
    for r in (acute, prep, ooo):
        assert set(r) >= {
            "path",
            "message_id",
            "label",
            "acute_probability",
            "auto_reply",
            "auto_reply_blocked_by",
            "hits",
        }
        assert 0.0 <= r["acute_probability"] <= 1.0
    assert acute["label"] == "acute" and acute["auto_reply"] is True and acute["auto_reply_blocked_by"] is None
    assert "HAPPENING_NOW" in acute["hits"]
    assert (
        prep["label"] == "preparation" and prep["auto_reply"] is False and "only acute" in prep["auto_reply_blocked_by"]
    )
    assert ooo["label"] == "automated" and ooo["auto_reply"] is False
    assert "error" in empty


def test_explain_in_words_shows_contributions_and_the_threshold(tmp_path, cfg_path, capsys):
    path = tmp_path / "a.eml"
    path.write_bytes(mails.acute())
    assert main(["--config", str(cfg_path), "explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ACUTE" in out and "threshold" in out and "MODEL_ACUTE" in out and "HAPPENING_NOW" in out
    assert "auto-reply: yes" in out


def test_run_refuses_an_outdated_schema_and_names_the_command(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[source]\nkind = "maildir"\nmaildir = "{ROOT / "sample" / "mailbox"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "empty.db"}"\n[paths]\ntemplates_dir = "{ROOT / "templates"}"\n'
    )
    assert main(["--config", str(cfg), "run", "--once"]) == 2
    assert "omo-mailbot db upgrade" in capsys.readouterr().err


def test_a_broken_config_is_reported_without_a_traceback(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[imap]\nusername = "x"\nport = "abc"\n')
    assert main(["--config", str(cfg), "run", "--once"]) == 2
    err = capsys.readouterr().err
    assert 'imap.port: expected an integer, got "abc"' in err and "Traceback" not in err


def test_preview_reply_renders_the_reply_or_says_why_not(tmp_path, cfg_path, capsys):
    acute, ooo = tmp_path / "a.eml", tmp_path / "b.eml"
    acute.write_bytes(mails.acute())
    ooo.write_bytes(mails.acute(headers={"Precedence": "bulk"}))
    assert main(["--config", str(cfg_path), "preview-reply", str(acute)]) == 0
    out = capsys.readouterr().out
    assert "Auto-Submitted: auto-replied" in out and "070-3738080" in out
    assert main(["--config", str(cfg_path), "preview-reply", str(ooo)]) == 0
    assert capsys.readouterr().out.startswith("no auto-reply: precedence")


def test_relabels_join_the_training_data(tmp_path, make_config, dovecot, mailbox_user, smtp_sink):
    from datetime import UTC, datetime

    from sqlalchemy import select

    from omo_mailbot.models import Message
    from omo_mailbot.relabels import relabel
    from omo_mailbot.service import build_service

    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    c = dovecot.client(mailbox_user)
    c.append("INBOX", mails.preparation())
    c.logout()
    service, engine = build_service(cfg)
    service.run_once()
    with service.sessions.begin() as s:
        message = s.execute(select(Message)).scalar_one()
        relabel(s, message, "acute", "kp@bzk.example", datetime.now(UTC), "bleek toch acuut")
    base, _ = training_set(cfg)
    texts, labels = training_set(cfg, service.sessions)
    assert len(texts) == len(base) + 1 and labels[-1] == "acute"
    engine.dispose()


def test_check_config_checks_the_roster_and_routing_files_too(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[source]\nkind = "maildir"\nmaildir = "{ROOT / "sample" / "mailbox"}"\n[paths]\n'
        f'templates_dir = "{ROOT / "templates"}"\nrules_dir = "{ROOT / "rules"}"\n' + write_roster(tmp_path)
    )
    assert main(["--config", str(cfg), "check-config"]) == 0
    assert "configuration, rules, templates, roster and routing are valid" in capsys.readouterr().out
    (tmp_path / "roster.toml").write_text(ROSTER.replace("capacity = 2", 'capacity = "twee"'))
    assert main(["--config", str(cfg), "check-config"]) == 1
    assert f"{tmp_path / 'roster.toml'}:" in capsys.readouterr().err


def test_ordinary_mistakes_get_one_line_and_exit_2_not_a_traceback(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[source]\nkind = "maildir"\nmaildir = "{ROOT / "sample" / "mailbox"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "never-migrated.db"}"\n'
        f'[paths]\ntemplates_dir = "{ROOT / "templates"}"\nrules_dir = "{ROOT / "rules"}"\n'
    )
    assert main(["--config", str(cfg), "preview-reply", str(tmp_path / "missing.eml")]) == 2
    err = capsys.readouterr().err
    assert "missing.eml" in err and "Traceback" not in err
    assert main(["--config", str(cfg), "explain", "--message-id", "<x@y>"]) == 2
    err = capsys.readouterr().err
    assert "omo-mailbot db upgrade" in err and "Traceback" not in err and "no such table" not in err
