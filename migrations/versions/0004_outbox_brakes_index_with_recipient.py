"""The brakes' outbox index also holds the recipient

Two of the brakes' counts (replies to this mailbox, and in this thread) keep
only the rows of one recipient out of every automatic reply in their window.
With the index on (kind, created_at) SQLite read each of those rows from the
table to see its recipient; during a backlog the window holds every reply of
the backlog, so each check cost more than the one before (1.5-2.5 ms per
check after 5,000 mails, a third of a millisecond per mail). With the
recipient in the index the rows of other recipients are passed over in the
index itself (0.5-0.7 ms per check, 0.06-0.10 ms per mail).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 23:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_brakes", "outbox", ["kind", "created_at", "recipient"])
    op.drop_index("ix_outbox_kind_created", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_kind_created", "outbox", ["kind", "created_at"])
    op.drop_index("ix_outbox_brakes", table_name="outbox")
