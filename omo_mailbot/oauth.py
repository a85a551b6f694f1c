"""OAuth2 access tokens for XOAUTH2 (Microsoft 365 client-credentials flow; the only importer of msal).

A fresh token is asked for on every (re)connect; msal serves it from its own
cache until shortly before expiry, so no refresh logic lives here. For tests,
an ``oauth.authority`` on loopback (``http://127.0.0.1…`` or
``http://localhost…``) is treated as a plain OAuth2 token endpoint and asked
directly with the client-credentials grant, without msal.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from typing import Any

from .config import OAuthConfig
from .errors import AuthenticationFailed

TOKEN_TIMEOUT_SECONDS = 20.0


class TokenSource:
    def __init__(self, cfg: OAuthConfig) -> None:
        self.cfg = cfg
        self._app: Any = None

    def _secret(self) -> str:
        secret = os.environ.get(self.cfg.client_secret_env, "")
        if not secret:
            raise AuthenticationFailed(f"oauth.client_secret_env: the variable {self.cfg.client_secret_env} is empty")
        return secret

    def token(self) -> str:
        authority = self.cfg.authority or f"https://login.microsoftonline.com/{self.cfg.tenant_id}"
        if authority.startswith("http://127.0.0.1") or authority.startswith("http://localhost"):
            return self._plain_client_credentials(authority)
        import msal

        if self._app is None:
            self._app = msal.ConfidentialClientApplication(
                self.cfg.client_id,
                authority=authority,
                client_credential=self._secret(),
                timeout=TOKEN_TIMEOUT_SECONDS,  # a hung identity provider must not hang a (re)connect
            )
        result = self._app.acquire_token_for_client(scopes=list(self.cfg.scopes))
        if "access_token" not in result:
            raise AuthenticationFailed(
                f"no OAuth token: {result.get('error')}: {str(result.get('error_description', ''))[:200]}"
            )
        return str(result["access_token"])

    def _plain_client_credentials(self, token_url: str) -> str:
        """A bare RFC 6749 client-credentials request to a local endpoint (test setups)."""
        body = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self.cfg.client_id,
                "client_secret": self._secret(),
                "scope": " ".join(self.cfg.scopes),
            }
        ).encode()
        try:
            request = urllib.request.Request(token_url, data=body)
            with urllib.request.urlopen(request, timeout=TOKEN_TIMEOUT_SECONDS) as resp:
                payload = json.loads(resp.read())
        except Exception as exc:
            raise AuthenticationFailed(f"token endpoint {token_url} failed: {exc}") from None
        if "access_token" not in payload:
            raise AuthenticationFailed(f"token endpoint gave no access_token: {payload.get('error')}")
        return str(payload["access_token"])
