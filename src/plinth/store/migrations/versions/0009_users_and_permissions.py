"""users, groups, API tokens, grants on resources, security events

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_NAME = sa.String(length=500)
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", _NAME, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("email", _NAME, nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", _NAME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_users")),
    )
    op.create_table(
        "user_groups",
        sa.Column("name", _NAME, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_user_groups")),
    )
    op.create_table(
        "group_members",
        sa.Column("group_name", _NAME, nullable=False),
        sa.Column("user_name", _NAME, nullable=False),
        sa.ForeignKeyConstraint(
            ["group_name"],
            ["user_groups.name"],
            name=op.f("fk_group_members_group_name_user_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_name"],
            ["users.name"],
            name=op.f("fk_group_members_user_name_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_name", "user_name", name=op.f("pk_group_members")),
    )
    op.create_index(op.f("ix_group_members_user_name"), "group_members", ["user_name"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_name", _NAME, nullable=False),
        sa.Column("label", _NAME, nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("last_used_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_name"],
            ["users.name"],
            name=op.f("fk_api_tokens_user_name_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_api_tokens_secret_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_name"), "api_tokens", ["user_name"])
    op.create_table(
        "grants",
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("resource", _NAME, nullable=False),
        sa.Column("grantee_type", sa.String(length=10), nullable=False),
        sa.Column("grantee", _NAME, nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("granted_by", _NAME, nullable=False),
        sa.Column("granted_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "kind", "resource", "grantee_type", "grantee", name=op.f("pk_grants")
        ),
    )
    op.create_index(op.f("ix_grants_grantee_type_grantee"), "grants", ["grantee_type", "grantee"])
    op.create_table(
        "security_events",
        sa.Column("id", _ROW_ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("actor", _NAME, nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("client", sa.String(length=100), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_events")),
    )
    op.create_index(op.f("ix_security_events_at"), "security_events", ["at"])
    _grant_existing_resources()


def _grant_existing_resources() -> None:
    """What existed before permissions keeps its readers: everyone may read it, and the
    owner recorded with it owns it."""
    import time

    grants = sa.table(
        "grants",
        sa.column("kind"),
        sa.column("resource"),
        sa.column("grantee_type"),
        sa.column("grantee"),
        sa.column("level"),
        sa.column("granted_by"),
        sa.column("granted_at"),
    )
    at = int(time.time() * 1000)
    conn = op.get_bind()
    for kind, table, key in (
        ("experiment", "experiments", "id"),
        ("model", "registered_models", "name"),
        ("feature_group", "feature_groups", "name"),
        ("feature_view", "feature_views", "name"),
    ):
        source = sa.table(table, sa.column(key), sa.column("owner"))
        owners: dict[str, str] = {}
        for resource, owner in conn.execute(sa.select(source.c[key], source.c.owner)):
            if owner or resource not in owners:
                owners[resource] = owner or ""
        rows = []
        for resource, owner in owners.items():
            rows.append((resource, "everyone", "*", 1))
            if owner:
                rows.append((resource, "user", owner, 4))
        if rows:
            conn.execute(
                sa.insert(grants),
                [
                    {
                        "kind": kind,
                        "resource": resource,
                        "grantee_type": grantee_type,
                        "grantee": grantee,
                        "level": level,
                        "granted_by": "migration 0009",
                        "granted_at": at,
                    }
                    for resource, grantee_type, grantee, level in rows
                ],
            )


def downgrade() -> None:
    op.drop_table("security_events")
    op.drop_table("grants")
    op.drop_table("api_tokens")
    op.drop_table("group_members")
    op.drop_table("user_groups")
    op.drop_table("users")
