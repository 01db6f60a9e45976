"""Leases: one holder at a time for background work among replicas (the A/B controller)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_NAME = sa.String(length=500)


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", _NAME, nullable=False),
        sa.Column("holder", _NAME, nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )


def downgrade() -> None:
    op.drop_table("leases")
