"""The ``evaluation_run`` table: one local evaluation of an algorithm on a cohort."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pair.db.base import Base, TimestampMixin


class RunStatus:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class EvaluationRun(TimestampMixin, Base):
    """Inputs (algorithm, cohort query, truth), progress, failed cases and the result JSON.

    ``cases`` holds the case-level table (series UID, pseudonym, label, scores) so the report can
    be rebuilt; it holds pseudonymous values only. ``truth_labels`` holds an uploaded label CSV
    already mapped to de-identified keys (original identifiers are never stored here).
    """

    __tablename__ = "evaluation_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    algorithm_id: Mapped[str] = mapped_column(String(64))
    algorithm_version: Mapped[str] = mapped_column(String(64))
    compare_algorithm_id: Mapped[str | None] = mapped_column(String(64), default=None)
    compare_version: Mapped[str | None] = mapped_column(String(64), default=None)
    cohort_query: Mapped[str] = mapped_column(Text, default="")
    truth_source: Mapped[str] = mapped_column(String(256))
    truth_labels: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED, index=True)
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    failures: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    cohort_summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cases: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str] = mapped_column(Text, default="")
    # who executes the run (host:pid:nonce) and when it last said so (epoch s); see jobs.py
    runner: Mapped[str] = mapped_column(String(128), default="", server_default="")
    heartbeat: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
