"""Bits Allocated on the instance index: QIDO-RS returns it by default (PS3.18 Table 10.6.3-5)

Revision ID: qido_0001
Revises:
Create Date: 2026-11-28 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "qido_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("qido",)
depends_on: str | Sequence[str] | None = "0003_patient_name_index"


def upgrade() -> None:
    op.add_column("instance", sa.Column("bits_allocated", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instance") as batch:
        batch.drop_column("bits_allocated")
