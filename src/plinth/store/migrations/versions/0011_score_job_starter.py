"""score_jobs.started_by: who started a job (only they, or an editor of its model, end it)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("score_jobs") as batch:
        batch.add_column(
            sa.Column("started_by", sa.String(length=500), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("score_jobs") as batch:
        batch.drop_column("started_by")
