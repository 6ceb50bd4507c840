"""Quantities as BIGINT; weights and predicted returns to 18 decimal places; plan notes.

A JSON number for a weight carries up to 17 significant digits (0.3333333333333333): 18
decimal places keep it exactly. Quantities are BIGINT so no plausible price and capital can
overflow them. `note` keeps the plan's own note apart from the latest outcome's message.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from orchestrator_cli.dbtypes import ExactDecimal

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signal_order_mappings") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        for column in ("target_qty", "order_qty"):
            batch.alter_column(column, type_=sa.BigInteger(), existing_type=sa.Integer())
        for column in ("predicted_return", "target_weight"):
            batch.alter_column(
                column, type_=ExactDecimal(36, 18), existing_type=ExactDecimal(30, 12)
            )


def downgrade() -> None:
    with op.batch_alter_table("signal_order_mappings") as batch:
        batch.drop_column("note")
        for column in ("predicted_return", "target_weight"):
            batch.alter_column(
                column, type_=ExactDecimal(30, 12), existing_type=ExactDecimal(36, 18)
            )
        for column in ("target_qty", "order_qty"):
            batch.alter_column(column, type_=sa.Integer(), existing_type=sa.BigInteger())
