"""evalruns: runner token and heartbeat (one executor per run, start-up resume)

Revision ID: evalruns_0002
Revises: evalruns_0001
Create Date: 2026-11-28 01:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "evalruns_0002"
down_revision: str | Sequence[str] | None = "evalruns_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "evaluation_run",
        sa.Column("runner", sa.String(length=128), nullable=False, server_default=""),
    )
    op.add_column(
        "evaluation_run",
        sa.Column("heartbeat", sa.Float(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("evaluation_run") as batch:
        batch.drop_column("heartbeat")
        batch.drop_column("runner")
