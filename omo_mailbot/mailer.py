"""Where mail leaves: SMTP (smtplib, persistent connection) or .eml files in a folder.

SMTP failures are sorted at this boundary: an unreachable server and 421 raise
:class:`ReceiverUnavailable`, a refused login :class:`SmtpLoginRefused` (both
hold the whole queue), other 4xx replies and 451/452 raise
:class:`TransientDeliveryError`, other 5xx replies :class:`PermanentDeliveryError`.
The envelope sender may be empty: smtplib then sends ``MAIL FROM:<>``, the null
sender RFC 3834 asks for auto-replies.
"""

from __future__ import annotations

import base64
import smtplib
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from .config import SmtpConfig
from .errors import PermanentDeliveryError, ReceiverUnavailable, SmtpLoginRefused, TransientDeliveryError

TRANSIENT_5XX = {421, 451, 452}


class Mailer(Protocol):
    def send(self, envelope_from: str, recipient: str, raw: bytes) -> None: ...
    def close(self) -> None: ...


def _classify(code: int, text: str) -> Exception:
    if code == 421:  # service not available, closing the channel: the receiver, not this mail
        return ReceiverUnavailable(f"SMTP {code}: {text[:200]}")
    if 400 <= code < 500 or code in TRANSIENT_5XX:
        return TransientDeliveryError(f"SMTP {code}: {text[:200]}")
    return PermanentDeliveryError(f"SMTP {code}: {text[:200]}")


class SmtpMailer:
    def __init__(self, cfg: SmtpConfig, *, token_provider: Callable[[], str] | None = None) -> None:
        self.cfg = cfg
        self._token_provider = token_provider
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        cfg = self.cfg
        try:
            conn: smtplib.SMTP
            if cfg.security == "ssl":
                conn = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_seconds, context=self._tls())
            else:
                conn = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds)
                if cfg.security == "starttls":
                    conn.starttls(context=self._tls())
            if cfg.auth == "xoauth2":
                if self._token_provider is None:
                    raise SmtpLoginRefused("smtp.auth is xoauth2 but no [oauth] token source is configured")
                token = self._token_provider()
                conn.ehlo_or_helo_if_needed()
                auth = f"user={cfg.username}\x01auth=Bearer {token}\x01\x01"
                code, _ = conn.docmd("AUTH", "XOAUTH2 " + base64.b64encode(auth.encode()).decode())
                if code != 235:
                    raise SmtpLoginRefused(f"SMTP XOAUTH2 refused ({code}); check the [oauth] settings")
            elif cfg.auth == "password" and cfg.username:
                conn.login(cfg.username, cfg.password())
        except smtplib.SMTPAuthenticationError as exc:
            raise SmtpLoginRefused(
                f"SMTP login refused ({exc.smtp_code}); check smtp.username and the variable named by smtp.password_env"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise _classify(exc.smtp_code, str(exc.smtp_error)) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise ReceiverUnavailable(f"cannot reach SMTP {cfg.host}:{cfg.port}: {type(exc).__name__}: {exc}") from None
        return conn

    def _tls(self) -> ssl.SSLContext:
        """Built only for a TLS connection: loading the system's certificates costs milliseconds."""
        return ssl.create_default_context(cafile=self.cfg.ca_file or None)

    def connect(self) -> None:
        """Connect (and log in) now instead of at the first send; ``check-config --live`` uses it."""
        if self._conn is None:
            self._conn = self._connect()

    def send(self, envelope_from: str, recipient: str, raw: bytes) -> None:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect()
            try:
                refused = self._conn.sendmail(envelope_from, [recipient], raw, self._options(envelope_from, recipient))
            except smtplib.SMTPNotSupportedError:
                raise PermanentDeliveryError(
                    "the address is not plain ASCII and the SMTP server does not offer SMTPUTF8 (RFC 6531)"
                ) from None
            except smtplib.SMTPServerDisconnected:
                self.close()
                if attempt == 2:
                    raise ReceiverUnavailable("SMTP server disconnected") from None
                continue  # a persistent connection may have timed out: one fresh try
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                raise _classify(code, text.decode(errors="replace") if isinstance(text, bytes) else str(text)) from None
            except smtplib.SMTPResponseException as exc:
                self._reset()
                raise _classify(exc.smtp_code, str(exc.smtp_error)) from None
            except (OSError, smtplib.SMTPException) as exc:
                self.close()
                raise ReceiverUnavailable(f"SMTP send failed: {type(exc).__name__}: {exc}") from None
            if refused:
                code, text = next(iter(refused.values()))
                raise _classify(code, str(text))
            return

    def _options(self, envelope_from: str, recipient: str) -> list[str]:
        """MAIL FROM options: SMTPUTF8 when an address is not plain ASCII (our mail then carries it raw in
        UTF-8, RFC 6532); smtplib refuses that on a server without the extension."""
        return [] if envelope_from.isascii() and recipient.isascii() else ["SMTPUTF8"]

    def _reset(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rset()
        except Exception:
            self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.quit()
            except Exception:
                conn.close()


class FileMailer:
    """Writes each outgoing mail as an .eml file (the embedded default has no SMTP server)."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self._count = 0

    def send(self, envelope_from: str, recipient: str, raw: bytes) -> None:
        self.outdir.mkdir(parents=True, exist_ok=True)
        self._count += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = self.outdir / f"{stamp}-{self._count:04d}.eml"
        envelope = f"X-Envelope-From: <{envelope_from}>\nX-Envelope-To: <{recipient}>\n".encode()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(envelope + raw)
        tmp.replace(path)

    def close(self) -> None:
        return None
