"""Where a run's time went: seconds per phase, stored when the run finishes.

`phase_seconds` is a JSON object such as `{"signals": 0.12, "record_plan": 0.05, "submit":
1.31, ...}`; runs finished before this migration have none.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orchestration_runs") as batch:
        batch.add_column(sa.Column("phase_seconds", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orchestration_runs") as batch:
        batch.drop_column("phase_seconds")
