"""An index on outbox (kind, created_at) for the auto-reply brakes

The brakes count this mailbox's, this thread's and all automatic replies in
a recent window for every reply they allow. Without an index those counts
read the whole outbox, whose rows stay (only their bodies are purged): 25 ms
per check at 100,000 rows on SQLite, 0.26 ms with the index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 21:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_kind_created", "outbox", ["kind", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_kind_created", table_name="outbox")
