"""Pipelines: registered pipelines, their schedules and triggers, runs and steps;
champion/challenger decisions

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_NAME = sa.String(length=500)
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("name", _NAME, nullable=False),
        sa.Column("entrypoint", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("experiment", _NAME, nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("retry_backoff_seconds", sa.Float(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("owner", _NAME, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pipelines")),
    )
    op.create_table(
        "pipeline_schedules",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("pipeline", _NAME, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("target", _NAME, nullable=True),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("catchup", sa.String(length=10), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=True),
        sa.Column("created_by", _NAME, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pipeline"],
            ["pipelines.name"],
            name=op.f("fk_pipeline_schedules_pipeline_pipelines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_schedules")),
    )
    op.create_index(op.f("ix_pipeline_schedules_pipeline"), "pipeline_schedules", ["pipeline"])
    op.create_table(
        "pipeline_runs",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("pipeline", _NAME, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("trigger", sa.String(length=200), nullable=False),
        sa.Column("schedule_id", sa.BigInteger(), nullable=True),
        sa.Column("trigger_key", sa.String(length=200), nullable=True),
        sa.Column("scheduled_for", sa.BigInteger(), nullable=True),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("retry_of", sa.BigInteger(), nullable=True),
        sa.Column("resumed_from", sa.BigInteger(), nullable=True),
        sa.Column("from_step", _NAME, nullable=True),
        sa.Column("queued_at", sa.BigInteger(), nullable=False),
        sa.Column("not_before", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("heartbeat_at", sa.BigInteger(), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("created_by", _NAME, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_runs")),
        sa.UniqueConstraint(
            "schedule_id", "trigger_key", name=op.f("uq_pipeline_runs_schedule_id_trigger_key")
        ),
    )
    op.create_index(op.f("ix_pipeline_runs_pipeline_id"), "pipeline_runs", ["pipeline", "id"])
    op.create_index(
        op.f("ix_pipeline_runs_status_not_before"), "pipeline_runs", ["status", "not_before"]
    )
    op.create_index(
        op.f("ix_pipeline_runs_retry_of_attempt"), "pipeline_runs", ["retry_of", "attempt"]
    )
    op.create_table(
        "pipeline_steps",
        sa.Column("pipeline_run", sa.BigInteger(), nullable=False),
        sa.Column("name", _NAME, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.Column("cache_key", sa.String(length=64), nullable=True),
        sa.Column("reused_from", sa.BigInteger(), nullable=True),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["pipeline_run"],
            ["pipeline_runs.id"],
            name=op.f("fk_pipeline_steps_pipeline_run_pipeline_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pipeline_run", "name", name=op.f("pk_pipeline_steps")),
    )
    op.create_index(op.f("ix_pipeline_steps_cache_key"), "pipeline_steps", ["cache_key"])
    op.create_table(
        "model_decisions",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("model_name", _NAME, nullable=False),
        sa.Column("key", _NAME, nullable=True),
        sa.Column("outcome", sa.String(length=12), nullable=False),
        sa.Column("metric", _NAME, nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("challenger_run_id", sa.String(length=32), nullable=True),
        sa.Column("challenger_version", sa.Integer(), nullable=True),
        sa.Column("challenger_score", sa.Float(), nullable=True),
        sa.Column("champion_version", sa.Integer(), nullable=True),
        sa.Column("champion_score", sa.Float(), nullable=True),
        sa.Column("pipeline_run", sa.BigInteger(), nullable=True),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("actor", _NAME, nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_decisions")),
        sa.UniqueConstraint("key", name=op.f("uq_model_decisions_key")),
    )
    op.create_index(
        op.f("ix_model_decisions_model_name_id"), "model_decisions", ["model_name", "id"]
    )
    op.create_index(op.f("ix_model_decisions_pipeline_run"), "model_decisions", ["pipeline_run"])


def downgrade() -> None:
    op.drop_table("model_decisions")
    op.drop_table("pipeline_steps")
    op.drop_table("pipeline_runs")
    op.drop_table("pipeline_schedules")
    op.drop_table("pipelines")
