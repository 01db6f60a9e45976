"""predictions: one row per request, inputs as columns

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25

The prediction log kept one row per predicted row, each with its own JSON; it now keeps one
row per request: ``inputs`` maps each column to its list of values, ``outputs`` lists one
output per row, ``rows`` says how many. Rows logged before are rewritten in that form.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_predictions = sa.table(
    "predictions",
    sa.column("id", sa.Integer),
    sa.column("inputs", sa.Text),
    sa.column("outputs", sa.Text),
)


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rows", sa.Integer(), server_default="1", nullable=False))
    _rewrite(lambda inputs, output: ({k: [v] for k, v in inputs.items()}, [output]))


def downgrade() -> None:
    # a request of several rows becomes its first row: the per-row form has no place for more
    _rewrite(lambda inputs, outputs: ({k: v[0] for k, v in inputs.items()}, outputs[0]))
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("rows")


def _rewrite(change: object) -> None:
    conn = op.get_bind()
    found = conn.execute(sa.select(_predictions).order_by(_predictions.c.id)).all()
    for row in found:
        inputs, outputs = change(json.loads(row.inputs), json.loads(row.outputs))  # type: ignore[operator]
        conn.execute(
            sa.update(_predictions)
            .where(_predictions.c.id == row.id)
            .values(inputs=json.dumps(inputs), outputs=json.dumps(outputs))
        )
