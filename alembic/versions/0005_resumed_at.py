"""When a run was last resumed, so a resumed run reports its own duration.

`duration_seconds` of a resumed run counts from `resumed_at`; the time since the run first
started is derived from `started_at` and `completed_at`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from orchestrator_cli.dbtypes import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orchestration_runs") as batch:
        batch.add_column(sa.Column("resumed_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orchestration_runs") as batch:
        batch.drop_column("resumed_at")
