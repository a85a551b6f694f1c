"""``check-config --live``: log in to IMAP and SMTP and say exactly which setting is wrong.

Each server is checked in steps, and the first step that fails names its keys:

1. a TCP connection to host:port            -> ``imap.host`` / ``imap.port``
2. the greeting, TLS or STARTTLS             -> ``imap.security`` (or ``imap.ca_file``)
3. the login                                 -> ``imap.username`` and the password variable,
                                                or ``[oauth]`` with ``auth = "xoauth2"``
4. (IMAP) selecting the folder               -> ``imap.folder`` / ``imap.move_to``

Nothing is read, changed or sent.
"""

from __future__ import annotations

import socket

from .config import Config, ImapConfig, OAuthConfig, SmtpConfig
from .errors import (
    AuthenticationFailed,
    DeliveryError,
    FolderMissing,
    PermanentDeliveryError,
    SmtpLoginRefused,
    TransientMailboxError,
)
from .mailbox import ImapSource
from .mailer import SmtpMailer
from .service import token_provider


def _reachable(host: str, port: int, section: str) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=5):
            return None
    except OSError as exc:
        return (
            f"{section}.host / {section}.port: nothing answers at {host}:{port} "
            f"({type(exc).__name__}: {exc.strerror or exc})"
        )


def _credentials_problem(section: str, auth: str, username: str, password_env: str, password: str) -> str | None:
    if auth != "password":
        return None
    if not username:
        return f"{section}.username is empty"
    if not password:
        return f"{section}.password_env: the environment variable {password_env} is not set or empty"
    return None


def check_imap(imap: ImapConfig, oauth: OAuthConfig) -> str | None:
    """None when login and SELECT work, else what is wrong, naming the setting."""
    problem = _reachable(imap.host, imap.port, "imap") or _credentials_problem(
        "imap", imap.auth, imap.username, imap.password_env, imap.password()
    )
    if problem:
        return problem
    source = ImapSource(imap, token_provider=token_provider(oauth) if imap.auth == "xoauth2" else None)
    try:
        source.open()
    except AuthenticationFailed as exc:
        if imap.auth == "xoauth2":
            return f"[oauth] / imap.username (auth = xoauth2): {exc}"
        return f"imap.username / {imap.password_env} (the password): {exc}"
    except FolderMissing as exc:
        return str(exc)
    except TransientMailboxError as exc:
        return (
            f'imap.security (= "{imap.security}"; 993 usually wants "ssl", 143 "starttls") or imap.ca_file: '
            f"connected to {imap.host}:{imap.port}, but the session failed: {exc}"
        )
    finally:
        source.close()
    return None


def check_smtp(smtp: SmtpConfig, oauth: OAuthConfig) -> str | None:
    """None when the connection (and login, when configured) works, else what is wrong."""
    problem = _reachable(smtp.host, smtp.port, "smtp") or (
        _credentials_problem("smtp", smtp.auth, smtp.username, smtp.password_env, smtp.password())
        if smtp.username or smtp.auth != "password"
        else None
    )
    if problem:
        return problem
    mailer = SmtpMailer(smtp, token_provider=token_provider(oauth) if smtp.auth == "xoauth2" else None)
    try:
        mailer.connect()
    except AuthenticationFailed as exc:
        return f"[oauth] (smtp.auth = xoauth2): {exc}"
    except (PermanentDeliveryError, SmtpLoginRefused) as exc:
        if smtp.auth == "xoauth2":
            return f"[oauth] / smtp.username (auth = xoauth2): {exc}"
        return f"smtp.username / {smtp.password_env} (the password): {exc}"
    except DeliveryError as exc:
        return (
            f'smtp.security (= "{smtp.security}"; 465 usually wants "ssl", 587 "starttls") or smtp.ca_file: '
            f"connected to {smtp.host}:{smtp.port}, but the session failed: {exc}"
        )
    finally:
        mailer.close()
    return None


def live_check(cfg: Config) -> int:
    """Print one line per server; 0 when both are fine, 1 otherwise."""
    failures = 0
    if cfg.source.kind == "imap":
        problem = check_imap(cfg.imap, cfg.oauth)
        if problem:
            failures += 1
            print(f"imap: FAILED — {problem}")
        else:
            print(
                f"imap: ok — logged in to {cfg.imap.host}:{cfg.imap.port} as the configured user "
                f"and opened {cfg.imap.folder!r}"
            )
    else:
        print(f"imap: skipped — source.kind is {cfg.source.kind!r}")
    if cfg.delivery.kind == "smtp":
        problem = check_smtp(cfg.smtp, cfg.oauth)
        if problem:
            failures += 1
            print(f"smtp: FAILED — {problem}")
        else:
            logged_in = cfg.smtp.auth == "xoauth2" or (cfg.smtp.auth == "password" and cfg.smtp.username)
            print(f"smtp: ok — connected to {cfg.smtp.host}:{cfg.smtp.port}" + (" and logged in" if logged_in else ""))
    else:
        print(f"smtp: skipped — delivery.kind is {cfg.delivery.kind!r}")
    return 1 if failures else 0
