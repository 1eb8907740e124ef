"""report.revision: optimistic concurrency counter of a report

Every change of a report (draft saved, signed, amended) updates its row only where the
revision is still the one the writer read, and increments it (SQLAlchemy version_id_col).

Revision ID: reporting_0002
Revises: reporting_0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "reporting_0002"
down_revision: str | Sequence[str] | None = "reporting_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("report") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("report") as batch:
        batch.drop_column("revision")
