"""Clinical record per case (pseudonymous patient). Values follow the data dictionary.

The record is one JSON document keyed by dictionary field names, so adding a field to the
dictionary needs no schema migration; ``dictionary_version`` says which rules it was checked
against. Only pseudonymous, date-free values are stored here (shareable).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pair.db.base import Base, TimestampMixin, utcnow
from pair.repository.models import Patient


class ClinicalRecord(TimestampMixin, Base):
    __tablename__ = "clinical_record"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.id"), unique=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dictionary_version: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128), default="")

    patient: Mapped[Patient] = relationship()
