"""Bits Allocated on the instance index: QIDO-RS returns it by default (PS3.18 Table 10.6.3-5)

Revision ID: 0004_instance_bits_allocated
Revises: 0003_patient_name_index
Create Date: 2026-11-28 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_instance_bits_allocated"
down_revision: str | Sequence[str] | None = "0003_patient_name_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("instance", sa.Column("bits_allocated", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instance") as batch:
        batch.drop_column("bits_allocated")
