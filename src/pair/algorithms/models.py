"""The ``algorithm`` table: one row per submitted package version (id + version unique)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pair.db.base import Base, TimestampMixin


class AlgorithmStatus:
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


class Algorithm(TimestampMixin, Base):
    """A validated package stored under ``data_dir/<stored_path>`` (manifest + model + card)."""

    __tablename__ = "algorithm"
    __table_args__ = (UniqueConstraint("algorithm_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    algorithm_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    stored_path: Mapped[str] = mapped_column(String(512))
    submitted_by: Mapped[str] = mapped_column(String(128), default="")
    facility_id: Mapped[int | None] = mapped_column(
        ForeignKey("facility.id"), default=None, index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=AlgorithmStatus.ACTIVE)

    @property
    def ref(self) -> str:
        return f"{self.algorithm_id}@{self.version}"
