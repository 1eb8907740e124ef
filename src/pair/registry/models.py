"""Approvals for DICOM download from the registry (MIDRC-like: data download to approved users).

An approval is granted and revoked only by the hub operator (``pair registry approve``); the
row is kept after revocation so the history stays visible next to the audit trail.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pair.db.base import Base, TimestampMixin, utcnow


class RegistryApproval(TimestampMixin, Base):
    __tablename__ = "registry_approval"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), unique=True)
    approved_by: Mapped[str] = mapped_column(String(128))
    approved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    note: Mapped[str] = mapped_column(Text, default="")
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
