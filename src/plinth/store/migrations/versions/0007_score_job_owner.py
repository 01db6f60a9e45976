"""score_jobs: the host and process running a job

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

A job killed while RUNNING stayed RUNNING: with the host and process id of its run, a
reconcile on that host sees the process is gone and ends the job FAILED (or DELIVERED when
its commit is in the output table).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("score_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host", sa.String(255), nullable=True))
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("score_jobs", schema=None) as batch_op:
        batch_op.drop_column("pid")
        batch_op.drop_column("host")
