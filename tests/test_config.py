"""The configuration file: validated at once, every mistake with its line and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from omo_mailbot.config import Config, default_config, load_config
from omo_mailbot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return [str(p) for p in err.value.problems]


def test_the_example_config_loads_and_documents_every_key():
    cfg = load_config(ROOT / "config.example.toml")
    text = (ROOT / "config.example.toml").read_text()
    for section in dataclasses.fields(Config):
        if section.name == "base_dir":
            continue
        assert f"[{section.name}]" in text, f"config.example.toml lacks [{section.name}]"
        for key in dataclasses.fields(getattr(cfg, section.name)):
            assert f"\n{key.name} = " in text, f"config.example.toml lacks {section.name}.{key.name}"


def test_the_example_config_shows_the_defaults():
    example = load_config(ROOT / "config.example.toml")
    example = dataclasses.replace(example, imap=dataclasses.replace(example.imap, username=""))
    defaults = default_config(example.base_dir)
    for section in dataclasses.fields(Config):
        if section.name in ("base_dir", "database"):
            continue
        assert getattr(example, section.name) == getattr(defaults, section.name), section.name


def test_a_wrong_type_names_the_key_line_and_what_was_expected(tmp_path):
    assert _problems(tmp_path, '[imap]\nusername = "x"\nport = "abc"\n') == [
        f'{tmp_path / "c.toml"}:3: imap.port: expected an integer, got "abc"'
    ]


def test_every_mistake_is_reported_at_once(tmp_path):
    problems = _problems(
        tmp_path, '[imap]\nusername = "x"\nporrt = 1\nsecurity = "tls"\n[smtp]\nport = 70000\n[bogus]\nx = 1\n'
    )
    joined = "\n".join(problems)
    assert "imap.porrt: unknown key" in joined
    assert 'imap.security: expected one of "ssl" | "starttls" | "none", got "tls"' in joined
    assert "smtp.port: must be between 1 and 65535, got 70000" in joined
    assert "bogus: unknown key" in joined
    assert len(problems) == 4


def test_a_syntax_error_names_its_line(tmp_path):
    (problem,) = _problems(tmp_path, "[imap]\nport = = 3\n")
    assert ":2:" in problem and "TOML syntax error" in problem


def test_imap_needs_a_username(tmp_path):
    (problem,) = _problems(tmp_path, "[imap]\nport = 993\n")
    assert "imap.username: required" in problem


def test_secrets_come_from_the_environment_not_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('[imap]\nusername = "omo"\npassword_env = "MY_SECRET"\n')
    monkeypatch.setenv("MY_SECRET", "s3cret")
    assert load_config(path).imap.password() == "s3cret"
    assert "password =" not in (ROOT / "config.example.toml").read_text()


def test_relative_sqlite_paths_are_relative_to_the_config_file(tmp_path):
    path = tmp_path / "sub" / "c.toml"
    path.parent.mkdir()
    path.write_text('[source]\nkind = "maildir"\n[database]\nurl = "sqlite:///data/omo.db"\n')
    assert load_config(path).database.url == f"sqlite:///{tmp_path / 'sub' / 'data' / 'omo.db'}"


def test_an_unknown_time_zone_names_its_line(tmp_path):
    (problem,) = _problems(tmp_path, '[imap]\nusername = "x"\n[digest]\ntimezone = "Europe/Amsterdm"\n')
    assert problem == (
        f'{tmp_path / "c.toml"}:4: digest.timezone: not a known time zone such as "Europe/Amsterdam": "Europe/Amsterdm"'
    )
