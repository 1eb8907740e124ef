"""perfreg schema: AI performance registry (feedback, metrics, alerts, facility secrets)

Revision ID: perfreg_0001
Revises:
Create Date: 2026-12-06 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "perfreg_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("perfreg",)
depends_on: str | Sequence[str] | None = "0001_core"


def upgrade() -> None:
    op.create_table(
        "perf_feedback_secret",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_perf_feedback_secret_facility_id_facility"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_perf_feedback_secret")),
    )
    op.create_index(
        op.f("ix_perf_feedback_secret_facility_id"), "perf_feedback_secret", ["facility_id"]
    )
    op.create_table(
        "perf_feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("feedback_id", sa.String(length=36), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("algorithm_id", sa.String(length=200), nullable=False),
        sa.Column("algorithm_version", sa.String(length=100), nullable=False),
        sa.Column("algorithm_name", sa.String(length=500), nullable=False),
        sa.Column("output_kind", sa.String(length=16), nullable=False),
        sa.Column("use_case_id", sa.String(length=64), nullable=True),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("site_created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_cases", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_perf_feedback_facility_id_facility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_perf_feedback")),
        sa.UniqueConstraint("feedback_id", name=op.f("uq_perf_feedback_feedback_id")),
    )
    op.create_index(op.f("ix_perf_feedback_facility_id"), "perf_feedback", ["facility_id"])
    op.create_index(op.f("ix_perf_feedback_algorithm_id"), "perf_feedback", ["algorithm_id"])
    op.create_table(
        "perf_metric",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("feedback_pk", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("lower", sa.Float(), nullable=True),
        sa.Column("upper", sa.Float(), nullable=True),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=True),
        sa.Column("events", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["feedback_pk"],
            ["perf_feedback.id"],
            name=op.f("fk_perf_metric_feedback_pk_perf_feedback"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_perf_metric")),
        sa.UniqueConstraint("feedback_pk", "metric", name=op.f("uq_perf_metric_feedback_pk")),
    )
    op.create_index(op.f("ix_perf_metric_feedback_pk"), "perf_metric", ["feedback_pk"])
    op.create_table(
        "perf_alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("algorithm_id", sa.String(length=200), nullable=False),
        sa.Column("algorithm_version", sa.String(length=100), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("use_case", sa.String(length=80), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_perf_alert_facility_id_facility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_perf_alert")),
        sa.UniqueConstraint(
            "algorithm_id",
            "algorithm_version",
            "facility_id",
            "metric",
            "period",
            "kind",
            name=op.f("uq_perf_alert_algorithm_id"),
        ),
    )
    op.create_index(op.f("ix_perf_alert_algorithm_id"), "perf_alert", ["algorithm_id"])
    op.create_index(op.f("ix_perf_alert_facility_id"), "perf_alert", ["facility_id"])


def downgrade() -> None:
    op.drop_table("perf_alert")
    op.drop_table("perf_metric")
    op.drop_table("perf_feedback")
    op.drop_table("perf_feedback_secret")
