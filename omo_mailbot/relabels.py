"""Human corrections of verdicts, as training data."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .classifier import model_text
from .models import Message, Relabel

LABELS = ("acute", "preparation")


def relabel(
    session: Session, message: Message, label: str, actor: str, now: datetime, reason: str | None = None
) -> Relabel:
    if label not in LABELS:
        raise ValueError(f"label must be acute or preparation, got {label!r}")
    row = Relabel(message_id=message.id, label=label, actor=actor, at=now, reason=reason)
    session.add(row)
    session.flush()
    return row


def relabelled_texts(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    """The newest relabel per message, with the text the model reads."""
    out: dict[int, tuple[str, str]] = {}
    with sessions() as s:
        rows = s.execute(
            select(Relabel, Message).join(Message, Message.id == Relabel.message_id).order_by(Relabel.at)
        ).all()
        for rel, msg in rows:
            if msg.new_text is None and msg.subject is None:
                continue
            out[msg.id] = (model_text(msg.subject or "", msg.new_text or ""), rel.label)
    return list(out.values())
