"""A mail over imap.max_message_mb is recorded from its headers and structure, never pulled whole."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from omo_mailbot.models import Case, Message
from omo_mailbot.service import build_service

from . import mails
from .harness import append_all

pytestmark = pytest.mark.integration


def test_an_oversized_mail_is_stored_from_headers_and_bodystructure_and_flagged_for_a_human(
    dovecot, mailbox_user, smtp_sink, make_config
):
    marker = "ONDERSTE-REGEL-VAN-DE-BIJLAGE"
    big = mails.make_mail("x" * 40_000 + "\n" + marker + "\n", subject="Grote bijlage")
    small = mails.preparation()
    append_all(dovecot, mailbox_user, [big, small])
    cfg = make_config(dovecot=dovecot, user=mailbox_user, sink=smtp_sink, extra="[imap]\nmax_message_mb = 0.02\n")
    service, engine = build_service(cfg)
    service.run_once()
    with service.sessions() as s:
        rows = s.execute(select(Message).order_by(Message.uid)).scalars().all()
        cases = {c.id: c for c in s.execute(select(Case)).scalars()}
    engine.dispose()
    assert len(rows) == 2
    large, normal = rows
    assert large.status == "too_large"
    assert large.size >= 40_000  # the size the server reported
    assert large.raw is not None and len(large.raw) < 2_000  # only the header block was fetched
    assert marker.encode() not in large.raw
    assert large.subject == "Grote bijlage"  # still readable for the human
    assert "BODYSTRUCTURE" in (large.error or "").upper() or "text" in (large.error or "").lower()
    case = cases[large.case_id]
    assert case.needs_human and "too large" in (case.needs_human_reason or "")
    assert normal.status == "decided"  # the next mail is processed as usual
    assert smtp_sink.messages == []  # an unread mail is never auto-answered
