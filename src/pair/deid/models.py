"""The site-private mapping store. These tables never leave the site; only admins export them."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from pair.db.base import Base, TimestampMixin


class PrivatePatientIdentity(TimestampMixin, Base):
    """Original patient identity -> pseudonym and date shift, keyed by an HMAC of the original."""

    __tablename__ = "private_patient_identity"
    __table_args__ = (Index("ix_private_patient_key", "facility_id", "original_key", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    original_key: Mapped[str] = mapped_column(String(64))
    original_patient_id: Mapped[str] = mapped_column(String(128), default="")
    original_patient_name: Mapped[str] = mapped_column(String(256), default="")
    original_issuer: Mapped[str] = mapped_column(String(128), default="")
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    date_shift_days: Mapped[int] = mapped_column()


class PrivateStudyIdentity(TimestampMixin, Base):
    """Original accession number / study UID -> de-identified study UID (for clinical import)."""

    __tablename__ = "private_study_identity"
    __table_args__ = (
        Index("ix_private_study_accession", "facility_id", "original_accession_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    original_study_uid: Mapped[str] = mapped_column(String(64))
    original_accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    pseudonym: Mapped[str] = mapped_column(String(64))


class PseudonymCounter(Base):
    """Per-facility counter for ``<site prefix>-<n>`` pseudonyms."""

    __tablename__ = "private_pseudonym_counter"

    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), primary_key=True)
    next_value: Mapped[int] = mapped_column(default=1)
