"""The database schema: every piece of state the service keeps.

Raw mail lives on the IMAP server until it is committed here; after that this
schema is the source of truth. Changes go through Alembic (migrations/).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps are stored as naive UTC and always come back timezone-aware (UTC),
    the same on SQLite (which keeps no zone) and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC time")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UtcDateTime()}


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, for the statements the hot path issues without the ORM."""
    return cast(Table, model.__table__)


class MailboxCursor(Base):
    """How far the mailbox has been read: (UIDVALIDITY, last UID) per folder."""

    __tablename__ = "mailbox_cursor"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(255), unique=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)  # IMAP numbers are unsigned 32-bit: not an INTEGER
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class Message(Base):
    """One mail as received: raw bytes first, then what was read from them."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("mailbox", "uidvalidity", "uid", name="uq_messages_location"),
        Index("ix_messages_message_id_header", "message_id_header"),
        Index("ix_messages_received_at", "received_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    message_id_header: Mapped[str | None] = mapped_column(String(998))
    size: Mapped[int] = mapped_column(Integer)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    received_at: Mapped[datetime]
    date_header: Mapped[datetime | None]
    subject: Mapped[str | None] = mapped_column(Text)
    from_addr: Mapped[str | None] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(Text)
    # decided | parse_failed | too_large | error
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    new_text: Mapped[str | None] = mapped_column(Text)
    stripped_text: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(8))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    purged_at: Mapped[datetime | None]


class Verdict(Base):
    """The decision for one message, with every contribution that made it."""

    __tablename__ = "verdicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), unique=True)
    label: Mapped[str] = mapped_column(String(20))  # acute | preparation | automated
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    acute_probability: Mapped[float | None] = mapped_column(Float)
    hits: Mapped[list[Any]] = mapped_column(JSON, default=list)
    automated_reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    auto_reply: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_reply_blocked_by: Mapped[str | None] = mapped_column(Text)
    topics: Mapped[list[Any]] = mapped_column(JSON, default=list)
    rules_hash: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(120))
    decided_at: Mapped[datetime]


class Case(Base):
    """Work for a contact person: one per conversation that needs a human."""

    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    # new | assigned | in_progress | referred | closed
    status: Mapped[str] = mapped_column(String(20), default="new")
    label: Mapped[str] = mapped_column(String(20))
    needs_human: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_human_reason: Mapped[str | None] = mapped_column(Text)
    assignee: Mapped[str | None] = mapped_column(String(320))
    topics: Mapped[list[Any]] = mapped_column(JSON, default=list)
    referred_to: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    requester: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_action_at: Mapped[datetime]


class CaseEvent(Base):
    """The history of a case: who did what, when and why."""

    __tablename__ = "case_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)


class Counter(Base):
    """Per-year sequence for case references (OMO-2026-0042)."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class OutboxMail(Base):
    """A mail to send. Written in the deciding transaction, sent after commit."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_recipient", "recipient", "created_at"),
        # the brakes' windows (autoreply.py); with the recipient, rows of others are skipped in the index
        Index("ix_outbox_brakes", "kind", "created_at", "recipient"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # auto_reply | duty_alert | digest | command_reply | operator_alert
    kind: Mapped[str] = mapped_column(String(20))
    message_id_header: Mapped[str] = mapped_column(String(998), unique=True)
    recipient: Mapped[str] = mapped_column(String(320))
    envelope_from: Mapped[str] = mapped_column(String(320), default="")
    thread_key: Mapped[str | None] = mapped_column(String(998))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    # pending | sending | sent | failed
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    lease_holder: Mapped[str | None] = mapped_column(String(120))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    source_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))


class Relabel(Base):
    """A human correction of a verdict; training uses these next to the seed corpus."""

    __tablename__ = "relabels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    label: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(320))
    at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)


class DigestRun(Base):
    """At most one digest per person per day, also across restarts and instances."""

    __tablename__ = "digest_runs"
    __table_args__ = (UniqueConstraint("person", "day", name="uq_digest_runs_person_day"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person: Mapped[str] = mapped_column(String(320))
    day: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime]
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))


class Bounce(Base):
    """A hard bounce for an address we wrote to; blocks auto-replies for a while."""

    __tablename__ = "bounces"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    at: Mapped[datetime]
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))


class Lease(Base):
    """A named lease (leader election for several instances on PostgreSQL)."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime]
