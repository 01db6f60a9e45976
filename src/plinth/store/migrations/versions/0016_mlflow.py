"""MLflow compatibility: soft deletion of experiments and runs; MLflow 3's logged models;
a run input's context, source type, schema and profile

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_NAME = sa.String(length=500)


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("deleted_at", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("deleted_at", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("run_inputs") as batch:
        batch.add_column(sa.Column("context", _NAME, nullable=True))
        batch.add_column(sa.Column("source_type", _NAME, nullable=True))
        batch.add_column(sa.Column("schema", sa.Text(), nullable=True))
        batch.add_column(sa.Column("profile", sa.Text(), nullable=True))
    op.create_table(
        "logged_models",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("source_run_id", sa.String(length=32), nullable=True),
        sa.Column("name", _NAME, nullable=False),
        sa.Column("model_type", _NAME, nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=False),
        sa.Column("artifact_path", sa.Text(), nullable=False),
        sa.Column("owner", _NAME, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_logged_models_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_run_id"],
            ["runs.id"],
            name=op.f("fk_logged_models_source_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logged_models")),
    )
    op.create_index(
        op.f("ix_logged_models_experiment_id_created_at"),
        "logged_models",
        ["experiment_id", "created_at"],
    )
    op.create_index(op.f("ix_logged_models_source_run_id"), "logged_models", ["source_run_id"])


def downgrade() -> None:
    op.drop_table("logged_models")
    with op.batch_alter_table("run_inputs") as batch:
        for name in ("profile", "schema", "source_type", "context"):
            batch.drop_column(name)
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("deleted_at")
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("deleted_at")
