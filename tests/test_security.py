"""Hostile mail and careless logging: markup stays escaped, headers cannot be injected, logs stay clean.

Every outgoing mail is read back from the SMTP sink; every log record of the
service at INFO and above is rendered and searched for what must not be there.
"""

from __future__ import annotations

import base64
import email
import logging
import os
import re
import subprocess
import sys
from email import policy

import pytest

from omo_mailbot.logs import JsonFormatter
from omo_mailbot.service import build_service

from . import mails
from .harness import ROOT, append_all

pytestmark = pytest.mark.integration

SENDER = "marieke.janssen@gemeente-zuid.example"
SCRIPT = "<script>alert('x')</script>"
HANDLER = '<img src=x onerror="alert(1)">'


def _encoded(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def hostile_acute() -> bytes:
    """An acute mail whose subject and display name decode to CR/LF + headers, with markup in the body."""
    body = mails.ACUTE_BODY + f'\n{SCRIPT}\n<a href="javascript:alert(2)" onmouseover="steal()">klik</a>\n'
    crlf = "\r\n"
    name = _encoded(f"Marieke {HANDLER}{crlf}Bcc: spion2@aanvaller.example")
    subject = _encoded(f"Rellen {SCRIPT}{crlf}Bcc: spion@aanvaller.example{crlf}X-Injected: ja")
    head = (
        f"From: {name} <{SENDER}>\r\n"
        f"Subject: {subject}\r\n"
        "To: Omo@minbzk.nl\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <hostile-1@gemeente-zuid.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head.encode() + body.replace("\n", "\r\n").encode()


def _outgoing(sink) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.content, policy=policy.default) for m in sink.messages]


@pytest.fixture
def answered(dovecot, mailbox_user, smtp_sink, make_config, caplog):
    append_all(dovecot, mailbox_user, [hostile_acute()])
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink)
    caplog.set_level(logging.DEBUG)
    service, engine = build_service(cfg)
    service.run_once()
    engine.dispose()
    assert len(smtp_sink.messages) == 2, "expected the reply and the duty alert"
    return smtp_sink


def test_markup_and_event_handlers_from_a_mail_never_reach_outgoing_html_unescaped(answered):
    for msg in _outgoing(answered):
        for part in msg.walk():
            if part.get_content_type() != "text/html":
                continue
            html = part.get_content()
            assert "<script" not in html.lower()
            assert not re.search(r"<[^>]+\son\w+\s*=", html, re.I), "an event handler attribute got through"
            assert "javascript:" not in html.lower()


def test_markup_from_a_mail_never_reaches_the_digest_unescaped(dovecot, mailbox_user, smtp_sink, make_config, tmp_path):
    from datetime import timedelta

    from .rosterkit import TUESDAY, FixedClock, write_roster

    append_all(dovecot, mailbox_user, [hostile_acute()])
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra=write_roster(tmp_path))
    clock = FixedClock(TUESDAY - timedelta(hours=2))
    service, engine = build_service(cfg, clock=clock)
    service.run_once()
    clock.now = TUESDAY
    assert service.digests is not None
    assert service.digests.run().sent
    service.drain_outbox()
    engine.dispose()
    digests = [m for m in _outgoing(smtp_sink) if m["Auto-Submitted"] == "auto-generated" and m.get_body(("html",))]
    assert digests
    for msg in digests:
        html = msg.get_body(("html",)).get_content()
        assert "<script" not in html.lower() and "<img" not in html.lower()
        assert not re.search(r"<[^>]+\son\w+\s*=", html, re.I), "an event handler attribute got through"
    assert any("&lt;script&gt;" in m.get_body(("html",)).get_content() for m in digests)  # shown, as text


def test_crlf_in_subject_or_name_never_injects_headers(answered):
    for received, msg in zip(answered.messages, _outgoing(answered), strict=True):
        assert all("aanvaller" not in rcpt for rcpt in received.rcpt_tos)
        assert msg["Bcc"] is None and msg["X-Injected"] is None
        head = received.content.split(b"\r\n\r\n", 1)[0]
        assert not re.search(rb"^(Bcc|X-Injected):", head, re.M | re.I)
        assert b"\r\n\r\n" not in head and b"\n\n" not in head


def test_logs_at_info_and_above_carry_no_bodies_and_no_addresses(answered, caplog):
    fmt = JsonFormatter()
    ours = [r for r in caplog.get_records("setup") if r.name.startswith("omo_mailbot") and r.levelno >= logging.INFO]
    assert ours, "the run logged nothing at all"
    rendered = "\n".join(fmt.format(r) for r in ours)
    # Message-IDs are allowed (they identify a mail without saying who wrote it); addresses are not
    without_ids = rendered.replace("<hostile-1@gemeente-zuid.example>", "")
    assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.-]+", without_ids), without_ids
    for fragment in ("demonstranten", "Vermeer", "Marieke", "janssen", "alert(", "spion", "Rellen"):
        assert fragment not in rendered


def _cli_run(config_path, *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omo_mailbot.cli", "--config", str(config_path), "run", "--once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_secrets_never_appear_in_logs_or_tracebacks_even_at_debug(dovecot, mailbox_user, make_config, tmp_path):
    secret = "Geheim-Wachtwoord-7f3e9a"
    make_config(
        dovecot=dovecot, user=mailbox_user, extra='[service]\nlog_level = "DEBUG"\n[imap]\nmax_login_failures = 1\n'
    )
    result = _cli_run(tmp_path / "config.toml", env={f"OMO_TEST_PW_{mailbox_user}": secret})
    assert result.returncode == 3  # the wrong password is refused...
    assert "login refused" in result.stderr
    assert secret not in result.stderr and secret not in result.stdout  # ...without ever being printed

    right = dovecot.users[mailbox_user]
    result = _cli_run(tmp_path / "config.toml", env={f"OMO_TEST_PW_{mailbox_user}": right})
    assert result.returncode == 0, result.stderr[-2000:]
    assert right not in result.stderr and right not in result.stdout


def test_an_encoded_display_name_cannot_smuggle_in_the_reply_address():
    from omo_mailbot.mail import parse

    name = _encoded("Burgemeester <derde@slachtoffer.example>")
    raw = f"From: {name} <{SENDER}>\r\nSubject: Onrust\r\nMessage-ID: <smuggle@x.example>\r\n\r\nHelp\r\n".encode()
    mail = parse(raw)
    assert mail.from_ is not None and mail.from_.addr == SENDER
    assert "slachtoffer" in mail.from_.name  # kept as text, never as an address


def test_decision_and_delivery_log_lines_carry_their_timings(answered, caplog):
    ours = {r.getMessage(): r for r in caplog.get_records("setup") if r.name.startswith("omo_mailbot")}
    decided, sent = ours["decided"], ours["outbox sent"]
    for key in ("parse_ms", "decide_ms", "act_ms"):
        assert isinstance(getattr(decided, key), float) and getattr(decided, key) >= 0, key
    assert decided.parse_ms + decided.decide_ms > 0  # a real mail takes measurable time to read and decide
    assert isinstance(sent.send_ms, float) and sent.send_ms > 0
    assert '"decide_ms"' in JsonFormatter().format(decided)
