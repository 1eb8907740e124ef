"""sharing schema: hub membership, site sharing policy, manual shares, outbox, hub receipts

Revision ID: sharing_0001
Revises:
Create Date: 2026-12-06 05:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sharing_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("sharing",)
depends_on: str | Sequence[str] | None = "0001_core"


def upgrade() -> None:
    op.create_table(
        "hub_receipt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("object_ref", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_hub_receipt_facility_id_facility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hub_receipt")),
        sa.UniqueConstraint("facility_id", "idempotency_key", name="uq_hub_receipt_key"),
    )
    op.create_index(
        op.f("ix_hub_receipt_facility_id"), "hub_receipt", ["facility_id"], unique=False
    )
    op.create_table(
        "sharing_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("object_key", sa.String(length=128), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_s", sa.Float(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_sharing_outbox_facility_id_facility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sharing_outbox")),
        sa.UniqueConstraint("facility_id", "kind", "object_key", name="uq_sharing_outbox_object"),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_sharing_outbox_idempotency_key")),
    )
    op.create_index(
        op.f("ix_sharing_outbox_facility_id"), "sharing_outbox", ["facility_id"], unique=False
    )
    op.create_index(op.f("ix_sharing_outbox_status"), "sharing_outbox", ["status"], unique=False)
    op.create_table(
        "sharing_policy",
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=32), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_sharing_policy_facility_id_facility")
        ),
        sa.PrimaryKeyConstraint("facility_id", name=op.f("pk_sharing_policy")),
    )
    op.create_table(
        "sharing_manual_case",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("shared_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_sharing_manual_case_facility_id_facility"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_pk"], ["patient.id"], name=op.f("fk_sharing_manual_case_patient_pk_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sharing_manual_case")),
        sa.UniqueConstraint("facility_id", "patient_pk", name="uq_sharing_manual_case"),
    )
    op.create_index(
        op.f("ix_sharing_manual_case_facility_id"),
        "sharing_manual_case",
        ["facility_id"],
        unique=False,
    )
    op.create_table(
        "hub_member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("code", sa.String(length=12), nullable=False),
        sa.Column("contact", sa.String(length=256), nullable=False),
        sa.Column("site_url", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_hub_member_facility_id_facility")
        ),
        sa.ForeignKeyConstraint(
            ["token_id"], ["api_token.id"], name=op.f("fk_hub_member_token_id_api_token")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_hub_member_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hub_member")),
        sa.UniqueConstraint("code", name=op.f("uq_hub_member_code")),
        sa.UniqueConstraint("name", name=op.f("uq_hub_member_name")),
    )
    op.create_index(op.f("ix_hub_member_status"), "hub_member", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_hub_member_status"), table_name="hub_member")
    op.drop_table("hub_member")
    op.drop_index(op.f("ix_sharing_manual_case_facility_id"), table_name="sharing_manual_case")
    op.drop_table("sharing_manual_case")
    op.drop_table("sharing_policy")
    op.drop_index(op.f("ix_sharing_outbox_status"), table_name="sharing_outbox")
    op.drop_index(op.f("ix_sharing_outbox_facility_id"), table_name="sharing_outbox")
    op.drop_table("sharing_outbox")
    op.drop_index(op.f("ix_hub_receipt_facility_id"), table_name="hub_receipt")
    op.drop_table("hub_receipt")
