"""feed schema: the hub change feed (commit-ordered sequence), webhooks and deliveries, quotas;
a subscriber's cursor and pulled cases

Revision ID: feed_0001
Revises:
Create Date: 2026-12-06 05:45:00

The counter row (id 1) that numbers feed events is inserted here (``pair.audit.feedlog``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "feed_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("feed",)
depends_on: str | Sequence[str] | None = "0001_core"


def upgrade() -> None:
    op.create_table(
        "feed_counter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_counter")),
    )
    op.create_table(
        "feed_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hub_url", sa.String(length=512), nullable=False),
        sa.Column("last_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_cursor")),
        sa.UniqueConstraint("hub_url", name=op.f("uq_feed_cursor_hub_url")),
    )
    op.create_table(
        "feed_event",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_feed_event")),
    )
    op.create_index(op.f("ix_feed_event_facility_id"), "feed_event", ["facility_id"], unique=False)
    op.create_index(op.f("ix_feed_event_study_uid"), "feed_event", ["study_uid"], unique=False)
    op.create_table(
        "feed_quota",
        sa.Column("facility_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "max_instances", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "max_bytes", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.PrimaryKeyConstraint("facility_id", name=op.f("pk_feed_quota")),
    )
    op.create_table(
        "feed_origin",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hub_url", sa.String(length=512), nullable=False),
        sa.Column("hub_study_uid", sa.String(length=64), nullable=False),
        sa.Column("local_study_uid", sa.String(length=64), nullable=False),
        sa.Column("origin_facility", sa.String(length=16), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_feed_origin_facility_id_facility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_origin")),
        sa.UniqueConstraint("hub_study_uid", name=op.f("uq_feed_origin_hub_study_uid")),
    )
    op.create_index(
        op.f("ix_feed_origin_facility_id"), "feed_origin", ["facility_id"], unique=False
    )
    op.create_index(
        op.f("ix_feed_origin_local_study_uid"), "feed_origin", ["local_study_uid"], unique=False
    )
    op.create_table(
        "feed_webhook",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("cursor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_feed_webhook_facility_id_facility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_webhook")),
    )
    op.create_index(
        op.f("ix_feed_webhook_facility_id"), "feed_webhook", ["facility_id"], unique=False
    )
    op.create_table(
        "feed_delivery",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=256), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["feed_webhook.id"],
            name=op.f("fk_feed_delivery_webhook_id_feed_webhook"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_delivery")),
        sa.UniqueConstraint("webhook_id", "seq", name="uq_feed_delivery_webhook_seq"),
    )
    op.create_index(
        "ix_feed_delivery_due", "feed_delivery", ["state", "next_attempt_at"], unique=False
    )
    counter = sa.table("feed_counter", sa.column("id", sa.Integer()), sa.column("value"))
    op.bulk_insert(counter, [{"id": 1, "value": 0}])


def downgrade() -> None:
    for table in (
        "feed_delivery",
        "feed_webhook",
        "feed_origin",
        "feed_quota",
        "feed_event",
        "feed_cursor",
        "feed_counter",
    ):
        op.drop_table(table)
