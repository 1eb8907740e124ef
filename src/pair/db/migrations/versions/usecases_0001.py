"""usecases schema: use-case versions and review comments

Revision ID: usecases_0001
Revises:
Create Date: 2026-12-06 03:15:00

Shipped use cases are not inserted here: ``pair.usecases.service.ensure_shipped`` loads them as
published at start-up from the data files, so a later release can ship new versions.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "usecases_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("usecases",)
depends_on: str | Sequence[str] | None = "0001_core"


def upgrade() -> None:
    op.create_table(
        "usecase_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("usecase_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("author_facility_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_facility_id"],
            ["facility.id"],
            name=op.f("fk_usecase_version_author_facility_id_facility"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usecase_version")),
        sa.UniqueConstraint("usecase_id", "version", name=op.f("uq_usecase_version_usecase_id")),
    )
    with op.batch_alter_table("usecase_version", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usecase_version_usecase_id"), ["usecase_id"], unique=False
        )
    op.create_table(
        "usecase_comment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_pk", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_pk"],
            ["usecase_version.id"],
            name=op.f("fk_usecase_comment_version_pk_usecase_version"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usecase_comment")),
    )
    with op.batch_alter_table("usecase_comment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usecase_comment_version_pk"), ["version_pk"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("usecase_comment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usecase_comment_version_pk"))
    op.drop_table("usecase_comment")
    with op.batch_alter_table("usecase_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usecase_version_usecase_id"))
    op.drop_table("usecase_version")
