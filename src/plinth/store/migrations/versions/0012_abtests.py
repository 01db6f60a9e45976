"""A/B experiments: their designs, every change to them, and the layers they share

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_NAME = sa.String(length=500)


def upgrade() -> None:
    op.create_table(
        "abtests",
        sa.Column("name", _NAME, nullable=False),
        sa.Column("owner", _NAME, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("layer", _NAME, nullable=True),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("stopped_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_abtests")),
    )
    op.create_index(op.f("ix_abtests_status"), "abtests", ["status"])
    op.create_index(op.f("ix_abtests_layer"), "abtests", ["layer"])
    op.create_table(
        "abtest_versions",
        sa.Column("name", _NAME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("changed_by", _NAME, nullable=False),
        sa.Column("changed_at", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["name"],
            ["abtests.name"],
            name=op.f("fk_abtest_versions_name_abtests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("name", "version", name=op.f("pk_abtest_versions")),
    )
    op.create_table(
        "abtest_layers",
        sa.Column("name", _NAME, nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("allocation", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_abtest_layers")),
    )


def downgrade() -> None:
    op.drop_table("abtest_layers")
    op.drop_table("abtest_versions")
    op.drop_index(op.f("ix_abtests_layer"), table_name="abtests")
    op.drop_index(op.f("ix_abtests_status"), table_name="abtests")
    op.drop_table("abtests")
