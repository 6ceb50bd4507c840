"""Create orchestration_runs and signal_order_mappings.

Revision ID: 0001
Revises:
Create Date: 2025-01-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from orchestrator_cli.dbtypes import ExactDecimal, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "orchestration_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("strategy_id", sa.String(length=100), nullable=False),
        sa.Column("as_of_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("symbols", sa.JSON(), nullable=False),
        sa.Column("capital", ExactDecimal(20, 2), nullable=False),
        sa.Column("max_position_size", ExactDecimal(20, 2), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("price_source", sa.String(length=20), nullable=False),
        _count("num_signals"),
        _count("num_orders_submitted"),
        _count("num_orders_accepted"),
        _count("num_orders_rejected"),
        _count("num_orders_blocked"),
        _count("num_orders_unknown"),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("signals_generated_at", UTCDateTime(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("duration_seconds", ExactDecimal(12, 3), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orchestration_runs")),
        sa.UniqueConstraint("run_id", name=op.f("uq_orchestration_runs_run_id")),
    )
    op.create_index(op.f("ix_orchestration_runs_as_of_date"), "orchestration_runs", ["as_of_date"])
    op.create_index(op.f("ix_orchestration_runs_status"), "orchestration_runs", ["status"])
    op.create_index(
        op.f("ix_orchestration_runs_strategy_id_as_of_date"),
        "orchestration_runs",
        ["strategy_id", "as_of_date"],
    )

    op.create_table(
        "signal_order_mappings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("symbol", sa.String(length=16), nullable=False),
        sa.Column("predicted_return", ExactDecimal(30, 12), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("target_weight", ExactDecimal(30, 12), nullable=False),
        sa.Column("price", ExactDecimal(20, 6), nullable=True),
        sa.Column("price_timestamp", UTCDateTime(), nullable=True),
        sa.Column("current_qty", ExactDecimal(24, 6), nullable=False),
        sa.Column("target_dollars", ExactDecimal(20, 2), nullable=True),
        sa.Column("target_qty", sa.Integer(), nullable=True),
        sa.Column("order_qty", sa.Integer(), nullable=True),
        sa.Column("order_side", sa.String(length=4), nullable=True),
        sa.Column("client_order_id", sa.String(length=24), nullable=True),
        sa.Column("broker_order_id", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("order_status", sa.String(length=32), nullable=True),
        sa.Column("filled_qty", ExactDecimal(24, 6), nullable=True),
        sa.Column("filled_avg_price", ExactDecimal(20, 6), nullable=True),
        sa.Column("filled_at", UTCDateTime(), nullable=True),
        sa.Column("skip_reason", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("submitted_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["orchestration_runs.run_id"],
            name=op.f("fk_signal_order_mappings_run_id_orchestration_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signal_order_mappings")),
        sa.UniqueConstraint(
            "run_id",
            "client_order_id",
            name=op.f("uq_signal_order_mappings_run_id_client_order_id"),
        ),
    )
    op.create_index(
        op.f("ix_signal_order_mappings_client_order_id"),
        "signal_order_mappings",
        ["client_order_id"],
    )
    op.create_index(op.f("ix_signal_order_mappings_run_id"), "signal_order_mappings", ["run_id"])
    op.create_index(op.f("ix_signal_order_mappings_symbol"), "signal_order_mappings", ["symbol"])


def downgrade() -> None:
    # Dropping a table drops its indexes and constraints with it.
    op.drop_table("signal_order_mappings")
    op.drop_table("orchestration_runs")
