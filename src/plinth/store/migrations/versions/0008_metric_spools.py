"""metric_spools: how far each writer's local spool of metric points was written

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_spools",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("spool", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_metric_spools_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "spool", name=op.f("pk_metric_spools")),
    )


def downgrade() -> None:
    op.drop_table("metric_spools")
