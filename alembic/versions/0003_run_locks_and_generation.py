"""Run lock per strategy and trading date; the generation of each run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from orchestrator_cli.dbtypes import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_locks",
        sa.Column("strategy_id", sa.String(length=100), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("strategy_id", "as_of_date", name=op.f("pk_run_locks")),
    )
    with op.batch_alter_table("orchestration_runs") as batch:
        batch.add_column(
            sa.Column("generation", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("orchestration_runs") as batch:
        batch.drop_column("generation")
    op.drop_table("run_locks")
