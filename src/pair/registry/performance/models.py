"""Performance-registry tables at the hub.

``perf_feedback`` holds one accepted feedback document (aggregate-only, as the site signed it);
``perf_metric`` its metrics with confidence intervals and counts; ``perf_alert`` the threshold and
drift alerts; ``perf_feedback_secret`` the HMAC secret shared with each member facility.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pair.db.base import Base, TimestampMixin


class PerfFeedbackSecret(TimestampMixin, Base):
    """The facility's signing secret (base64). Only the newest unrevoked one verifies: issuing a
    new one revokes the old, so a leaked secret is retired by issuing another."""

    __tablename__ = "perf_feedback_secret"

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    secret: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class PerfFeedback(TimestampMixin, Base):
    __tablename__ = "perf_feedback"
    __table_args__ = (UniqueConstraint("feedback_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    feedback_id: Mapped[str] = mapped_column(String(36))
    payload_sha256: Mapped[str] = mapped_column(String(64))
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    algorithm_id: Mapped[str] = mapped_column(String(200), index=True)
    algorithm_version: Mapped[str] = mapped_column(String(100))
    algorithm_name: Mapped[str] = mapped_column(String(500), default="")
    output_kind: Mapped[str] = mapped_column(String(16))
    use_case_id: Mapped[str | None] = mapped_column(String(64), default=None)
    period: Mapped[str] = mapped_column(String(16))  # "2026-Q3" or "2026-08"
    period_start: Mapped[date] = mapped_column(Date)
    site_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    n_cases: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(String(200), default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)

    metrics: Mapped[list[PerfMetric]] = relationship(
        back_populates="feedback", lazy="selectin", cascade="all, delete-orphan"
    )


class PerfMetric(Base):
    __tablename__ = "perf_metric"
    __table_args__ = (UniqueConstraint("feedback_pk", "metric"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    feedback_pk: Mapped[int] = mapped_column(ForeignKey("perf_feedback.id"), index=True)
    metric: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float)
    lower: Mapped[float | None] = mapped_column(Float, default=None)
    upper: Mapped[float | None] = mapped_column(Float, default=None)
    level: Mapped[float] = mapped_column(Float, default=0.95)
    n: Mapped[int | None] = mapped_column(Integer, default=None)  # denominator (cases)
    events: Mapped[int | None] = mapped_column(Integer, default=None)  # numerator, proportions

    feedback: Mapped[PerfFeedback] = relationship(back_populates="metrics")


class PerfAlert(TimestampMixin, Base):
    """A site's period estimate below the use case's minimum (``below_minimum``) or its lower
    CUSUM over the decision limit (``cusum``); one row per kind, series and period."""

    __tablename__ = "perf_alert"
    __table_args__ = (
        UniqueConstraint(
            "algorithm_id", "algorithm_version", "facility_id", "metric", "period", "kind"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    algorithm_id: Mapped[str] = mapped_column(String(200), index=True)
    algorithm_version: Mapped[str] = mapped_column(String(100))
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    metric: Mapped[str] = mapped_column(String(32))
    period: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    use_case: Mapped[str] = mapped_column(String(80))
    message: Mapped[str] = mapped_column(String(500))
