"""Quarantine items keep the instance as received, so review can re-run de-identification

Revision ID: 0005_quarantine_original
Revises: 0004_instance_bits_allocated
Create Date: 2026-12-06 02:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_quarantine_original"
down_revision: str | Sequence[str] | None = "0004_instance_bits_allocated"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "quarantine_item", sa.Column("original_path", sa.String(length=256), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("quarantine_item") as batch:
        batch.drop_column("original_path")
