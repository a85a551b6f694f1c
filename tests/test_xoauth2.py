"""XOAUTH2 end to end: our token source, Dovecot's oauth2 passdb and an SMTP server that checks the bearer token.

A tiny identity provider runs in a thread on 127.0.0.1: ``POST /token`` hands
out access tokens for the client-credentials grant (the request
:class:`omo_mailbot.oauth.TokenSource` sends), and ``POST /introspect`` is
what Dovecot asks (RFC 7662) to check a token. A separate Dovecot is configured
with ``auth_mechanisms = ... xoauth2 oauthbearer`` and ``passdb { driver = oauth2 }``.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from omo_mailbot.errors import AuthenticationFailed
from omo_mailbot.mailbox import ImapSource
from omo_mailbot.mailer import SmtpMailer
from omo_mailbot.oauth import TokenSource

from .servers import DovecotServer, free_port

pytestmark = pytest.mark.integration
CLIENT_ID = "omo-test-client"
CLIENT_SECRET = "s3cret-for-tests"


class IdentityProvider:
    """Client-credentials token endpoint plus token introspection, on loopback."""

    def __init__(self, username: str) -> None:
        self.username = username
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self.introspections = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path == "/token":
                    idp.token_requests.append(form)
                    if form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET:
                        token = "tok-" + secrets.token_hex(8)
                        idp.tokens.add(token)
                        self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})
                    else:
                        self._json(401, {"error": "invalid_client"})
                elif self.path == "/introspect":
                    idp.introspections += 1
                    token = form.get("token", "")
                    if token in idp.tokens:
                        self._json(200, {"active": "true", "username": idp.username})
                    else:
                        self._json(200, {"active": "false"})
                else:
                    self._json(404, {})

            def _json(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> IdentityProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider("omo@minbzk.example") as provider:
        yield provider


@pytest.fixture(scope="module")
def oauth_dovecot(idp: IdentityProvider) -> Iterator[DovecotServer]:
    srv = DovecotServer(
        users={"someone": "not-used"},
        extra_mechs=" xoauth2 oauthbearer",
        extra_passdb="passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
        "  args = {root}/dovecot-oauth2.conf.ext\n}\n",
    )
    srv.extra_passdb = srv.extra_passdb.replace("{root}", str(srv.root))
    (srv.root / "dovecot-oauth2.conf.ext").write_text(
        "introspection_mode = post\n"
        f"introspection_url = http://127.0.0.1:{idp.port}/introspect\n"
        "username_attribute = username\n"
        "active_attribute = active\n"
        "active_value = true\n"
    )
    srv.start()
    yield srv
    srv.cleanup()


def _oauth_config(idp: IdentityProvider, monkeypatch: pytest.MonkeyPatch, secret: str = CLIENT_SECRET) -> Any:
    from omo_mailbot.config import OAuthConfig

    monkeypatch.setenv("OMO_TEST_OAUTH_SECRET", secret)
    return OAuthConfig(
        tenant_id="test-tenant",
        client_id=CLIENT_ID,
        client_secret_env="OMO_TEST_OAUTH_SECRET",
        authority=f"http://127.0.0.1:{idp.port}/token",
    )


def _imap_config(srv: DovecotServer) -> Any:
    from omo_mailbot.config import ImapConfig

    return ImapConfig(host="127.0.0.1", port=srv.port, security="none", username="omo@minbzk.example", auth="xoauth2")


def test_imap_logs_in_with_a_fresh_token_from_the_token_endpoint(oauth_dovecot, idp, monkeypatch):
    tokens = TokenSource(_oauth_config(idp, monkeypatch))
    source = ImapSource(_imap_config(oauth_dovecot), token_provider=tokens.token)
    before = len(idp.token_requests)
    try:
        assert source.open() > 0  # logged in and INBOX selected: a UIDVALIDITY
        source.close()
        assert source.open() > 0  # a reconnect asks for a token again
    finally:
        source.close()
    requests = idp.token_requests[before:]
    assert len(requests) == 2
    assert requests[0]["grant_type"] == "client_credentials" and requests[0]["client_id"] == CLIENT_ID
    assert idp.introspections >= 2, oauth_dovecot.read_log()


def test_imap_refuses_a_token_the_provider_does_not_know(oauth_dovecot, idp):
    source = ImapSource(_imap_config(oauth_dovecot), token_provider=lambda: "tok-forged")
    with pytest.raises(AuthenticationFailed, match="login refused"):
        source.open()


def test_a_wrong_client_secret_is_named(idp, monkeypatch):
    tokens = TokenSource(_oauth_config(idp, monkeypatch, secret="wrong"))
    with pytest.raises(AuthenticationFailed, match="token endpoint"):
        tokens.token()


class XOAuth2Sink:
    """aiosmtpd that accepts AUTH XOAUTH2 only with a token the provider issued."""

    def __init__(self, idp: IdentityProvider) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.received: list[tuple[str, bytes]] = []
        self.auth_attempts: list[str] = []
        sink = self

        class Handler:
            async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
                decoded = base64.b64decode(args[1]).decode() if len(args) > 1 else ""
                fields = dict(p.split("=", 1) for p in decoded.split("\x01") if "=" in p)
                sink.auth_attempts.append(fields.get("user", ""))
                token = fields.get("auth", "").removeprefix("Bearer ")
                return AuthResult(success=token in idp.tokens, handled=False, auth_data=fields.get("user"))

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if not session.authenticated:
                    return "530 5.7.0 Authentication required"
                sink.received.append((str(session.auth_data), bytes(envelope.content)))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, auth_require_tls=False, ready_timeout=5.0
        )


@pytest.fixture
def xoauth2_sink(idp: IdentityProvider) -> Iterator[XOAuth2Sink]:
    sink = XOAuth2Sink(idp)
    sink.controller.start()
    yield sink
    sink.controller.stop()


def _smtp_config(port: int) -> Any:
    from omo_mailbot.config import SmtpConfig

    return SmtpConfig(host="127.0.0.1", port=port, security="none", username="omo@minbzk.example", auth="xoauth2")


def test_smtp_sends_with_a_bearer_token(xoauth2_sink, idp, monkeypatch):
    mailer = SmtpMailer(
        _smtp_config(xoauth2_sink.port), token_provider=TokenSource(_oauth_config(idp, monkeypatch)).token
    )
    try:
        mailer.send("", "iemand@gemeente-voorbeeld.nl", b"Subject: test\r\n\r\nHallo\r\n")
    finally:
        mailer.close()
    assert xoauth2_sink.auth_attempts == ["omo@minbzk.example"]
    assert xoauth2_sink.received and xoauth2_sink.received[0][0] == "omo@minbzk.example"


def test_smtp_names_oauth_when_the_token_is_refused(xoauth2_sink):
    from omo_mailbot.errors import SmtpLoginRefused

    mailer = SmtpMailer(_smtp_config(xoauth2_sink.port), token_provider=lambda: "tok-forged")
    with pytest.raises(SmtpLoginRefused, match="XOAUTH2 refused"):
        mailer.send("", "iemand@gemeente-voorbeeld.nl", b"Subject: test\r\n\r\nHallo\r\n")
    mailer.close()
    assert xoauth2_sink.received == []


def test_check_config_live_logs_in_with_xoauth2_and_names_oauth_when_the_secret_is_wrong(
    oauth_dovecot, xoauth2_sink, idp, monkeypatch
):
    from omo_mailbot.live_check import check_imap, check_smtp

    oauth = _oauth_config(idp, monkeypatch)
    assert check_imap(_imap_config(oauth_dovecot), oauth) is None
    assert check_smtp(_smtp_config(xoauth2_sink.port), oauth) is None
    wrong = _oauth_config(idp, monkeypatch, secret="wrong")
    assert (check_imap(_imap_config(oauth_dovecot), wrong) or "").startswith("[oauth] / imap.username")
    assert (check_smtp(_smtp_config(xoauth2_sink.port), wrong) or "").startswith("[oauth]")
