"""The service configuration: one TOML file, validated completely at start-up.

Every section is a frozen dataclass; :func:`load_config` walks the file against
these classes and collects *every* mistake (unknown key, wrong type, value out
of range) before raising one :class:`ConfigError`, so an operator fixes the file
in one go. Secrets are never in the file: it names environment variables
(``password_env``) and :meth:`ImapConfig.password` reads them when needed.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from datetime import time as clock_time
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import tomlfile
from .errors import ConfigError, Problem
from .tomlfile import KeyPath, TomlDoc

Security = Literal["ssl", "starttls", "none"]


@dataclass(frozen=True)
class ImapConfig:
    """Where the mailbox lives. ``security``: ssl (port 993), starttls or none (tests only)."""

    host: str = "127.0.0.1"
    port: int = 993
    security: Security = "ssl"
    username: str = ""
    password_env: str = "OMO_IMAP_PASSWORD"
    auth: Literal["password", "xoauth2"] = "password"
    folder: str = "INBOX"
    processed_keyword: str = "$OmoProcessed"
    move_to: str = ""
    use_idle: bool = True
    idle_renew_seconds: int = 600
    poll_interval_seconds: int = 60
    connect_timeout_seconds: float = 15.0
    read_timeout_seconds: float = 60.0
    batch_size: int = 50
    max_message_mb: float = 25.0
    max_login_failures: int = 3
    ca_file: str = ""

    def password(self) -> str:
        return os.environ.get(self.password_env, "")


@dataclass(frozen=True)
class SmtpConfig:
    """Where replies leave. ``envelope_from = ""`` sends with the null sender ``<>`` (RFC 3834)."""

    host: str = "127.0.0.1"
    port: int = 587
    security: Security = "starttls"
    username: str = ""
    password_env: str = "OMO_SMTP_PASSWORD"
    auth: Literal["password", "xoauth2", "none"] = "password"
    from_address: str = "Omo@minbzk.nl"
    from_name: str = "Ondersteuningsnetwerk maatschappelijke onrust"
    envelope_from: str = ""
    message_id_domain: str = "minbzk.nl"
    timeout_seconds: float = 30.0
    max_per_minute: int = 30
    max_attempts: int = 8
    backoff_base_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0
    ca_file: str = ""

    def password(self) -> str:
        return os.environ.get(self.password_env, "")


@dataclass(frozen=True)
class OAuthConfig:
    """Microsoft 365 client-credentials flow (used when imap.auth or smtp.auth is xoauth2)."""

    tenant_id: str = ""
    client_id: str = ""
    client_secret_env: str = "OMO_OAUTH_CLIENT_SECRET"
    authority: str = ""
    scopes: list[str] = field(default_factory=lambda: ["https://outlook.office365.com/.default"])


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///omo-mailbot.db"


@dataclass(frozen=True)
class SourceConfig:
    """``imap`` for production; ``maildir`` reads a local Maildir (the bundled sample)."""

    kind: Literal["imap", "maildir"] = "imap"
    maildir: str = "sample/mailbox"


@dataclass(frozen=True)
class DeliveryConfig:
    """``smtp`` for production; ``files`` writes each outgoing mail as .eml into ``outdir``."""

    kind: Literal["smtp", "files"] = "smtp"
    outdir: str = "outbox-files"


@dataclass(frozen=True)
class PathsConfig:
    rules_dir: str = "rules"
    templates_dir: str = "templates"
    model_file: str = "model/omo-classifier.npz"
    corpus_dir: str = "corpus/seed"
    holdout_dir: str = "corpus/holdout"


@dataclass(frozen=True)
class DecisionConfig:
    """Rspamd-style: every rule and the model add weighted points; at or above the threshold is acute."""

    acute_threshold: float = -1.5
    model_weight: float = 12.0
    auto_train: bool = True


# Local parts of robot senders (globs): bounce daemons, list software, no-reply addresses.
# The auto-reply guards use this list unless autoreply.robot_local_parts overrides it.
ROBOT_LOCAL_PARTS: tuple[str, ...] = (
    "mailer-daemon",
    "postmaster",
    "listserv",
    "majordomo",
    "owner-*",
    "*-owner",
    "*-request",
    "*-bounce",
    "*-bounces",
    "bounce-*",
    "bounces",
    "noreply*",
    "no-reply*",
    "no_reply*",
    "donotreply*",
    "do-not-reply*",
    "do_not_reply*",
    "mailman",
    "root",
)


@dataclass(frozen=True)
class AutoReplyConfig:
    """When acute mail is answered, and the brakes that keep us from answering machines."""

    enabled: bool = True
    acknowledge_preparation: bool = False
    own_addresses: list[str] = field(default_factory=lambda: ["omo@minbzk.nl"])
    robot_local_parts: list[str] = field(default_factory=lambda: list(ROBOT_LOCAL_PARTS))
    per_thread_max: int = 1
    per_thread_window_hours: float = 168.0
    per_sender_max: int = 3
    per_sender_window_hours: float = 24.0
    global_max_per_hour: int = 60
    bounce_block_days: int = 30
    loop_header: str = "X-Omo-Loop"


@dataclass(frozen=True)
class AlertsConfig:
    """Duty alerts for acute mail go here until the roster names people on duty."""

    duty_address: str = ""
    operator_address: str = ""


@dataclass(frozen=True)
class ServiceConfig:
    instance_name: str = "omo-1"
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    outbox_poll_seconds: float = 30.0
    shutdown_grace_seconds: float = 5.0
    lease_seconds: float = 30.0
    leader_check_seconds: float = 5.0
    rules_reload_seconds: float = 5.0
    decide_ahead: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus ``/metrics`` and ``/healthz`` (see omo_mailbot.metrics)."""

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 9464
    outbox_stuck_seconds: float = 600.0
    outbox_undelivered_seconds: float = 3600.0
    healthz_timeout_seconds: float = 3.0


@dataclass(frozen=True)
class DigestConfig:
    time: str = "08:00"
    timezone: str = "Europe/Amsterdam"
    holiday_names: list[str] = field(
        default_factory=lambda: [
            "Nieuwjaarsdag",
            "Eerste paasdag",
            "Tweede paasdag",
            "Koningsdag",
            "Hemelvaartsdag",
            "Eerste pinksterdag",
            "Tweede pinksterdag",
            "Eerste kerstdag",
            "Tweede kerstdag",
            "Bevrijdingsdag",
        ]
    )
    extra_days_off: list[str] = field(default_factory=list)
    extra_working_days: list[str] = field(default_factory=list)
    stale_after_working_days: int = 2
    require_authenticated_commands: bool = True
    trusted_authserv_ids: list[str] = field(default_factory=list)

    @property
    def zone(self) -> ZoneInfo:
        """The time zone of ``time`` and of the working days (validated at load)."""
        return ZoneInfo(self.timezone)

    @property
    def at(self) -> clock_time:
        """``time`` as a clock time (validated at load)."""
        hh, mm = self.time.split(":")
        return clock_time(int(hh), int(mm))


@dataclass(frozen=True)
class RosterConfig:
    """Contact persons, duty schedule and topic routing; a missing file means no roster (cases stay unassigned)."""

    roster_file: str = "roster/roster.toml"
    routing_file: str = "roster/routing.toml"


@dataclass(frozen=True)
class PrivacyConfig:
    retention_days: int = 365


@dataclass(frozen=True)
class Config:
    imap: ImapConfig = field(default_factory=ImapConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    oauth: OAuthConfig = field(default_factory=OAuthConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    autoreply: AutoReplyConfig = field(default_factory=AutoReplyConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    digest: DigestConfig = field(default_factory=DigestConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    roster: RosterConfig = field(default_factory=RosterConfig)
    base_dir: str = "."

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else Path(self.base_dir) / p


# --- the walker -------------------------------------------------------------

_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("imap", "port"): (1, 65535),
    ("smtp", "port"): (1, 65535),
    ("metrics", "port"): (1, 65535),
    ("metrics", "healthz_timeout_seconds"): (0.1, 300),
    ("imap", "idle_renew_seconds"): (30, 1740),
    ("imap", "poll_interval_seconds"): (1, 86400),
    ("imap", "batch_size"): (1, 1000),
    ("imap", "max_message_mb"): (0.01, 1024),
    ("imap", "max_login_failures"): (1, 100),
    ("smtp", "max_per_minute"): (1, 10000),
    ("smtp", "max_attempts"): (1, 100),
    ("decision", "acute_threshold"): (-100, 100),
    ("decision", "model_weight"): (0, 100),
    ("privacy", "retention_days"): (1, 36500),
    ("service", "leader_check_seconds"): (0.5, 300),
    ("service", "rules_reload_seconds"): (0, 3600),
}


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _check(tp: Any, value: Any, doc: TomlDoc, key: KeyPath, problems: list[Problem]) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            choices = " | ".join(f'"{a}"' for a in allowed)
            problems.append(doc.problem(key, f"expected one of {choices}, got {_describe(value)}"))
        return value
    if origin in (types.UnionType, typing.Union):
        return value
    if origin is list:
        (inner,) = get_args(tp)
        if not isinstance(value, list):
            problems.append(doc.problem(key, f"expected an array, got {_describe(value)}"))
            return value
        return [_check(inner, v, doc, (*key, i), problems) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(doc.problem(key, f"expected true or false, got {_describe(value)}"))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(doc.problem(key, f"expected an integer, got {_describe(value)}"))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(doc.problem(key, f"expected a number, got {_describe(value)}"))
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(doc.problem(key, f"expected a string, got {_describe(value)}"))
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(doc.problem(key, f"expected a table, got {_describe(value)}"))
            return None
        return _build(tp, value, doc, key, problems)
    raise TypeError(f"config schema uses an unsupported type {tp!r}")  # a bug in this module


def _build(cls: Any, table: dict[str, Any], doc: TomlDoc, key: KeyPath, problems: list[Problem]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "base_dir"}
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        path = (*key, name)
        if name not in known:
            choices = ", ".join(sorted(known))
            problems.append(doc.problem(path, f"unknown key (known here: {choices})"))
            continue
        before = len(problems)
        checked = _check(hints[name], value, doc, path, problems)
        if len(problems) == before:
            lo_hi = _RANGES.get((str(key[0]), name)) if key else None
            if lo_hi and isinstance(checked, int | float) and not lo_hi[0] <= checked <= lo_hi[1]:
                problems.append(doc.problem(path, f"must be between {lo_hi[0]:g} and {lo_hi[1]:g}, got {checked}"))
            elif checked is not None:
                kwargs[name] = checked
    return cls(**kwargs)


def _semantic_checks(cfg: Config, doc: TomlDoc, problems: list[Problem]) -> None:
    if cfg.source.kind == "imap" and not cfg.imap.username:
        problems.append(doc.problem(("imap", "username"), 'required when source.kind is "imap"'))
    if not cfg.database.url.startswith(("sqlite:", "postgresql")):
        problems.append(doc.problem(("database", "url"), "expected a sqlite:/// or postgresql+psycopg:// URL"))
    if "@" not in cfg.smtp.from_address:
        problems.append(
            doc.problem(("smtp", "from_address"), f"not an e-mail address: {_describe(cfg.smtp.from_address)}")
        )
    hh, _, mm = cfg.digest.time.partition(":")
    if not (hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
        problems.append(doc.problem(("digest", "time"), f'expected "HH:MM", got {_describe(cfg.digest.time)}'))
    try:
        ZoneInfo(cfg.digest.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        known = 'not a known time zone such as "Europe/Amsterdam"'
        problems.append(doc.problem(("digest", "timezone"), f"{known}: {_describe(cfg.digest.timezone)}"))


def load_config(path: Path | str) -> Config:
    """Load and validate ``path``; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    doc = tomlfile.load(path)
    return config_from_doc(doc, base_dir=str(path.resolve().parent))


def config_from_doc(doc: TomlDoc, base_dir: str = ".") -> Config:
    problems: list[Problem] = []
    cfg = _build(Config, doc.data, doc, (), problems)
    if problems:
        raise ConfigError(problems)
    cfg = dataclasses.replace(cfg, base_dir=base_dir)
    url = cfg.database.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        # a relative SQLite path is relative to the config file, like every other path in it
        absolute = (Path(base_dir) / url[len("sqlite:///") :]).resolve()
        cfg = dataclasses.replace(cfg, database=DatabaseConfig(url=f"sqlite:///{absolute}"))
    _semantic_checks(cfg, doc, problems)
    if problems:
        raise ConfigError(problems)
    assert isinstance(cfg, Config)
    return cfg


def default_config(base_dir: str = ".") -> Config:
    return Config(base_dir=base_dir)
