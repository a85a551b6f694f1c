"""``check-config --live``: log in to IMAP and SMTP and say exactly which setting is wrong."""

from __future__ import annotations

from .config import Config
from .errors import AuthenticationFailed, DeliveryError, FolderMissing, TransientMailboxError
from .mailbox import ImapSource
from .mailer import SmtpMailer


def live_check(cfg: Config) -> int:
    failures = 0
    source = ImapSource(cfg.imap)
    try:
        uidvalidity = source.open()
        print(
            f"imap: ok — logged in to {cfg.imap.host}:{cfg.imap.port} and opened {cfg.imap.folder!r} "
            f"(UIDVALIDITY {uidvalidity})"
        )
    except AuthenticationFailed as exc:
        failures += 1
        print(f"imap: FAILED — imap.username / {cfg.imap.password_env}: {exc}")
    except FolderMissing as exc:
        failures += 1
        print(f"imap: FAILED — {exc}")
    except TransientMailboxError as exc:
        failures += 1
        print(f"imap: FAILED — imap.host / imap.port / imap.security: {exc}")
    finally:
        source.close()
    mailer = SmtpMailer(cfg.smtp)
    try:
        mailer._conn = mailer._connect()
        print(
            f"smtp: ok — connected to {cfg.smtp.host}:{cfg.smtp.port}"
            + (" and logged in" if cfg.smtp.auth != "none" and cfg.smtp.username else "")
        )
    except DeliveryError as exc:
        failures += 1
        print(f"smtp: FAILED — smtp.host / smtp.port / smtp.security / smtp.username: {exc}")
    finally:
        mailer.close()
    return 1 if failures else 0
