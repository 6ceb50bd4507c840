"""Pre-trade limits and gateway mode on runs; order legs and reduce flags on mappings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orchestration_runs") as batch:
        batch.add_column(sa.Column("limits", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("gateway_mode", sa.String(length=16), nullable=True))
    with op.batch_alter_table("signal_order_mappings") as batch:
        batch.add_column(
            sa.Column("leg", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(sa.Column("reduces", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("signal_order_mappings") as batch:
        batch.drop_column("reduces")
        batch.drop_column("leg")
    with op.batch_alter_table("orchestration_runs") as batch:
        batch.drop_column("gateway_mode")
        batch.drop_column("limits")
