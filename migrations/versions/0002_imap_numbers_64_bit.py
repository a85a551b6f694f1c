"""IMAP UIDs and UIDVALIDITY as 64-bit integers

RFC 3501 makes both unsigned 32-bit numbers (up to 4,294,967,295). A signed
32-bit INTEGER on PostgreSQL refused any value from 2**31 on, and the service
stopped at every start against such a server. SQLite's INTEGER already holds
64 bits, so only PostgreSQL changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = (
    ("mailbox_cursor", "uidvalidity"),
    ("mailbox_cursor", "last_uid"),
    ("messages", "uidvalidity"),
    ("messages", "uid"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False)
