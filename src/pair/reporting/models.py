"""Report records: a Report per (study, module) and its immutable signed versions.

Draft → final (signed by a radiologist) → amended (a new version); a signed version is never
changed. Inputs, evaluation and rendered text are stored per version so every output can be
rebuilt exactly as signed.

``Report.revision`` counts every change of a report (draft saved, signed, amended): SQLAlchemy
updates the row only ``WHERE revision = <the one it read>`` and bumps it, so of two concurrent
writers one gets a stale-data error instead of silently overwriting the other; clients send
the revision they loaded (``expected_revision``) and get 409 Conflict when it is stale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pair.db.base import Base, TimestampMixin, utcnow


class Report(TimestampMixin, Base):
    __tablename__ = "report"
    __table_args__ = (
        UniqueConstraint("study_uid", "module_id", name="uq_report_study_module"),
        Index("ix_report_facility_status", "facility_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    module_id: Mapped[str] = mapped_column(String(64))
    module_version: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft | final | amended
    current_version: Mapped[int] = mapped_column(default=1)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revision: Mapped[int] = mapped_column(default=1, server_default="1")

    versions: Mapped[list[ReportVersion]] = relationship(
        back_populates="report", order_by="ReportVersion.version"
    )

    __mapper_args__ = {"version_id_col": revision}


class ReportVersion(TimestampMixin, Base):
    __tablename__ = "report_version"
    __table_args__ = (UniqueConstraint("report_id", "version", name="uq_report_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("report.id"), index=True)
    version: Mapped[int] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft | final | amended
    module_version: Mapped[str] = mapped_column(String(16))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    suggestions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    text: Mapped[str] = mapped_column(Text, default="")
    edited_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    signed_by_name: Mapped[str] = mapped_column(String(128), default="")
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    amend_reason: Mapped[str] = mapped_column(Text, default="")
    sr_sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    sr_stored: Mapped[bool] = mapped_column(default=False)

    report: Mapped[Report] = relationship(back_populates="versions")
