"""Monitoring: profiles, monitors, their evaluations, alerts, late labels; drift of inserts

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_NAME = sa.String(length=500)
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("feature_groups") as batch:
        batch.add_column(sa.Column("drift_reference", sa.Text(), nullable=True))
    with op.batch_alter_table("feature_commits") as batch:
        batch.add_column(sa.Column("drift", sa.Text(), nullable=True))
    op.create_table(
        "profiles",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("subject_kind", sa.String(length=20), nullable=False),
        sa.Column("subject", _NAME, nullable=False),
        sa.Column("group_name", _NAME, nullable=True),
        sa.Column("group_version", sa.Integer(), nullable=True),
        sa.Column("commit_version", sa.BigInteger(), nullable=True),
        sa.Column("model_name", _NAME, nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("score_job_id", sa.BigInteger(), nullable=True),
        sa.Column("window_start", sa.BigInteger(), nullable=True),
        sa.Column("window_end", sa.BigInteger(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("created_by", _NAME, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profiles")),
    )
    op.create_index(
        op.f("ix_profiles_subject_kind_subject"), "profiles", ["subject_kind", "subject"]
    )
    op.create_index(
        op.f("ix_profiles_group_name_group_version_commit_version"),
        "profiles",
        ["group_name", "group_version", "commit_version"],
    )
    op.create_index(
        op.f("ix_profiles_model_name_model_version"), "profiles", ["model_name", "model_version"]
    )
    op.create_table(
        "profile_columns",
        sa.Column("profile_id", _ROW_ID, nullable=False),
        sa.Column("column_name", _NAME, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("dtype", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("nulls", sa.BigInteger(), nullable=False),
        sa.Column("distinct", sa.BigInteger(), nullable=True),
        sa.Column("mean", sa.Float(), nullable=True),
        sa.Column("std", sa.Float(), nullable=True),
        sa.Column("min", sa.Float(), nullable=True),
        sa.Column("max", sa.Float(), nullable=True),
        sa.Column("deciles", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_profile_columns_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("profile_id", "column_name", name=op.f("pk_profile_columns")),
    )
    op.create_table(
        "monitors",
        sa.Column("name", _NAME, nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("target", _NAME, nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("schedule_seconds", sa.Integer(), nullable=True),
        sa.Column("on_event", sa.Boolean(), nullable=False),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("cooldown_seconds", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("owner", _NAME, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("last_run_at", sa.BigInteger(), nullable=True),
        sa.Column("last_event", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_monitors")),
    )
    op.create_index(op.f("ix_monitors_kind_target"), "monitors", ["kind", "target"])
    op.create_table(
        "monitor_evaluations",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("monitor", _NAME, nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("trigger", sa.String(length=100), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("reference_profile", sa.BigInteger(), nullable=True),
        sa.Column("current_profile", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["monitor"],
            ["monitors.name"],
            name=op.f("fk_monitor_evaluations_monitor_monitors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_evaluations")),
    )
    op.create_index(
        op.f("ix_monitor_evaluations_monitor_at"), "monitor_evaluations", ["monitor", "at"]
    )
    op.create_table(
        "alerts",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("monitor", _NAME, nullable=False),
        sa.Column("evaluation_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("severity", sa.String(length=10), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("dedup_key", _NAME, nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("delivery", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("acknowledged_by", _NAME, nullable=True),
        sa.Column("acknowledged_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["monitor"],
            ["monitors.name"],
            name=op.f("fk_alerts_monitor_monitors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(op.f("ix_alerts_monitor_at"), "alerts", ["monitor", "at"])
    op.create_index(op.f("ix_alerts_delivery"), "alerts", ["delivery"])
    op.create_table(
        "labels",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("model_name", _NAME, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("entity_key", sa.Text(), nullable=True),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("logged_at", sa.BigInteger(), nullable=False),
        sa.Column("logged_by", _NAME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
    )
    op.create_index(op.f("ix_labels_model_name_request_id"), "labels", ["model_name", "request_id"])
    op.create_index(op.f("ix_labels_model_name_at"), "labels", ["model_name", "at"])


def downgrade() -> None:
    op.drop_table("labels")
    op.drop_table("alerts")
    op.drop_table("monitor_evaluations")
    op.drop_table("monitors")
    op.drop_table("profile_columns")
    op.drop_table("profiles")
    with op.batch_alter_table("feature_commits") as batch:
        batch.drop_column("drift")
    with op.batch_alter_table("feature_groups") as batch:
        batch.drop_column("drift_reference")
