"""Every error omo-mailbot raises on purpose, in one tree.

    OmoError
    ├── ConfigError            a file an operator edits is wrong (carries every Problem found)
    ├── SchemaOutdated         the database is behind the code; run `omo-mailbot db upgrade`
    ├── InstanceLocked         another instance already holds the single-node (SQLite) lock
    ├── ModelError             the classifier file is missing, corrupt or from another version
    ├── ParseError             one mail could not be read (stored with the error, never dropped)
    └── MailboxError           the IMAP side failed
        ├── TransientMailboxError   network trouble, BYE, timeouts: back off and reconnect
        ├── AuthenticationFailed    bad credentials: bounded retries, then stop loudly
        └── FolderMissing           the configured folder does not exist: a configuration error
    └── DeliveryError          the SMTP side failed
        ├── TransientDeliveryError  4xx: retry this mail with backoff
        │   └── ReceiverUnavailable     unreachable, 421: the whole queue waits, attempts not counted
        │       └── SmtpLoginRefused    our login was refused: the same, and an operator must act
        └── PermanentDeliveryError  5xx: park the outbox row for a human

The composition root (cli, service) is the only place that turns these into
exit codes; everything below it raises.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One mistake in an operator file, reported as ``file:line: key: message``."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class OmoError(Exception):
    """Base of every deliberate omo-mailbot error."""


class ConfigError(OmoError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SchemaOutdated(OmoError):
    pass


class InstanceLocked(OmoError):
    pass


class ModelError(OmoError):
    pass


class ParseError(OmoError):
    pass


class MailboxError(OmoError):
    pass


class TransientMailboxError(MailboxError):
    pass


class AuthenticationFailed(MailboxError):
    pass


class FolderMissing(MailboxError):
    pass


class DeliveryError(OmoError):
    pass


class TransientDeliveryError(DeliveryError):
    pass


class ReceiverUnavailable(TransientDeliveryError):
    """The SMTP server cannot be reached, hung up or said 421: every queued mail waits, in order."""


class SmtpLoginRefused(ReceiverUnavailable):
    """The SMTP server refused our login (or XOAUTH2 is not set up): no mail can go, every queued mail waits.

    Not a failure of any one mail: a rotated password or an expired client secret
    must not park the whole outbox as failed.
    """


class PermanentDeliveryError(DeliveryError):
    pass
