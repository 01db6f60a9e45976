"""model_versions.manifest_sha256: the sha256 of the manifest a version was registered with

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for versions registered before: loading them compares the manifest's content
    # with the registry's copy instead
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("manifest_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("manifest_sha256")
