"""``omo-mailbot check-config --live`` logs in for real and names the setting that is wrong."""

from __future__ import annotations

import pytest

from omo_mailbot.cli import main

from .servers import free_port

pytestmark = pytest.mark.integration


def _check(tmp_path, capsys) -> tuple[int, str]:
    code = main(["--config", str(tmp_path / "config.toml"), "check-config", "--live"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_correct_settings_say_ok_for_both_servers(dovecot, mailbox_user, smtp_sink, make_config, tmp_path, capsys):
    make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    code, out = _check(tmp_path, capsys)
    assert code == 0, out
    assert "imap: ok — logged in to 127.0.0.1" in out and "opened 'INBOX'" in out
    assert f"smtp: ok — connected to 127.0.0.1:{smtp_sink.port}" in out
    assert smtp_sink.messages == []  # nothing is sent


def test_a_wrong_password_names_the_username_and_the_password_variable(
    dovecot, mailbox_user, smtp_sink, make_config, tmp_path, capsys, monkeypatch
):
    make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    monkeypatch.setenv(f"OMO_TEST_PW_{mailbox_user}", "not-the-password")
    code, out = _check(tmp_path, capsys)
    assert code == 1
    assert f"imap: FAILED — imap.username / OMO_TEST_PW_{mailbox_user} (the password)" in out
    assert "smtp: ok" in out


def test_an_unset_password_variable_is_named(dovecot, mailbox_user, smtp_sink, make_config, tmp_path, capsys):
    make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra='[imap]\npassword_env = "OMO_NOT_SET_X"\n')
    code, out = _check(tmp_path, capsys)
    assert code == 1
    assert "imap: FAILED — imap.password_env: the environment variable OMO_NOT_SET_X is not set or empty" in out


def test_a_wrong_imap_port_names_host_and_port(dovecot, mailbox_user, smtp_sink, make_config, tmp_path, capsys):
    port = free_port()
    make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=f"[imap]\nport = {port}\n")
    code, out = _check(tmp_path, capsys)
    assert code == 1
    assert f"imap: FAILED — imap.host / imap.port: nothing answers at 127.0.0.1:{port}" in out


def test_tls_against_a_plain_port_names_imap_security(dovecot, mailbox_user, smtp_sink, make_config, tmp_path, capsys):
    make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra='[imap]\nsecurity = "ssl"\n')
    code, out = _check(tmp_path, capsys)
    assert code == 1
    assert 'imap: FAILED — imap.security (= "ssl"' in out


def test_a_missing_folder_is_named(dovecot, mailbox_user, smtp_sink, make_config, tmp_path, capsys):
    make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra='[imap]\nfolder = "Bestaat-niet"\n')
    code, out = _check(tmp_path, capsys)
    assert code == 1
    assert "imap: FAILED — imap.folder: the folder 'Bestaat-niet' does not exist on the server" in out


def test_a_wrong_smtp_port_names_smtp_host_and_port(dovecot, mailbox_user, smtp_sink, make_config, tmp_path, capsys):
    port = free_port()
    make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=f"[smtp]\nport = {port}\n")
    code, out = _check(tmp_path, capsys)
    assert code == 1
    assert "imap: ok" in out
    assert f"smtp: FAILED — smtp.host / smtp.port: nothing answers at 127.0.0.1:{port}" in out
