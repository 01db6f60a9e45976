"""feature store

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 15:30:28.513666
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entities",
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("join_keys", sa.Text(), nullable=False),
        sa.Column("value_type", sa.String(length=20), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_entities")),
    )
    op.create_table(
        "feature_commits",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("group_name", sa.String(length=500), nullable=False),
        sa.Column("group_version", sa.Integer(), nullable=False),
        sa.Column("commit_version", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("operation", sa.String(length=20), nullable=False),
        sa.Column("written_by", sa.String(length=500), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("validation_passed", sa.Boolean(), nullable=False),
        sa.Column("statistics", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_commits")),
    )
    with op.batch_alter_table("feature_commits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_feature_commits_group_name_group_version_commit_version"),
            ["group_name", "group_version", "commit_version"],
            unique=False,
        )

    op.create_table(
        "validation_reports",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("group_name", sa.String(length=500), nullable=False),
        sa.Column("group_version", sa.Integer(), nullable=False),
        sa.Column("commit_version", sa.BigInteger(), nullable=True),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("results", sa.Text(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_reports")),
    )
    with op.batch_alter_table("validation_reports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_validation_reports_group_name_group_version_id"),
            ["group_name", "group_version", "id"],
            unique=False,
        )

    op.create_table(
        "feature_groups",
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=500), nullable=False),
        sa.Column("keys", sa.Text(), nullable=False),
        sa.Column("event_time", sa.String(length=500), nullable=False),
        sa.Column("features", sa.Text(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("ttl_seconds", sa.BigInteger(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("table_uri", sa.Text(), nullable=False),
        sa.Column("expectations", sa.Text(), nullable=False),
        sa.Column("validation_mode", sa.String(length=10), nullable=False),
        sa.Column("materialized_until", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["entity"], ["entities.name"], name=op.f("fk_feature_groups_entity_entities")
        ),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_feature_groups")),
    )


def downgrade() -> None:
    op.drop_table("feature_groups")
    with op.batch_alter_table("validation_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_validation_reports_group_name_group_version_id"))

    op.drop_table("validation_reports")
    with op.batch_alter_table("feature_commits", schema=None) as batch_op:
        batch_op.drop_index(
            batch_op.f("ix_feature_commits_group_name_group_version_commit_version")
        )

    op.drop_table("feature_commits")
    op.drop_table("entities")
