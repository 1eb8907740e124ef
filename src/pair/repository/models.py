"""Index of stored, de-identified instances (shareable) and the quarantine queue.

Only de-identified values live in these tables. Original identifiers are held apart in the
site-private mapping store (``pair.deid.models``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pair.db.base import Base, TimestampMixin, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


class Patient(TimestampMixin, Base):
    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    shareable: Mapped[bool] = mapped_column(default=True)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(TimestampMixin, Base):
    __tablename__ = "study"
    __table_args__ = (
        Index("ix_study_facility_date", "facility_id", "study_date"),
        Index("ix_study_patient_id_value", "patient_id_value"),
        Index("ix_study_accession_number", "accession_number"),
        Index("ix_study_facility_patient_id", "facility_id", "patient_id_value", "study_date"),
        # PN prefix matching compares lower(patient_name); see migration 0003_patient_name_index.
        Index(
            "ix_study_facility_lower_name",
            "facility_id",
            func.lower(text("patient_name")).label("lower_name"),
            postgresql_ops={"lower_name": "text_pattern_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(256), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(256), default="")
    patient_name: Mapped[str] = mapped_column(String(256), default="")
    patient_id_value: Mapped[str] = mapped_column(String(64), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    patient_age: Mapped[str] = mapped_column(String(4), default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")
    num_series: Mapped[int] = mapped_column(default=0)
    num_instances: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    shareable: Mapped[bool] = mapped_column(default=True)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(TimestampMixin, Base):
    __tablename__ = "series"
    __table_args__ = (Index("ix_series_study_modality", "study_pk", "modality"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(default=None)
    series_description: Mapped[str] = mapped_column(String(256), default="")
    body_part_examined: Mapped[str] = mapped_column(String(64), default="")
    manufacturer: Mapped[str] = mapped_column(String(128), default="")
    manufacturer_model_name: Mapped[str] = mapped_column(String(128), default="")
    performed_procedure_step_start_date: Mapped[str] = mapped_column(String(8), default="")
    performed_procedure_step_start_time: Mapped[str] = mapped_column(String(16), default="")
    num_instances: Mapped[int] = mapped_column(default=0)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    instance_number: Mapped[int | None] = mapped_column(default=None)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    rows: Mapped[int | None] = mapped_column(default=None)
    columns: Mapped[int | None] = mapped_column(default=None)
    number_of_frames: Mapped[int | None] = mapped_column(default=None)
    bits_allocated: Mapped[int | None] = mapped_column(default=None)
    storage_path: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigId)
    source: Mapped[str] = mapped_column(String(128), default="")
    burned_in_risk: Mapped[str] = mapped_column(String(256), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class QuarantineItem(TimestampMixin, Base):
    """A de-identified instance held back because residual PHI was found; admin review."""

    __tablename__ = "quarantine_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    storage_path: Mapped[str] = mapped_column(String(256))
    # The instance as received (before de-identification), in the quarantine store: needed to
    # re-run de-identification and to re-scan a reviewed result. Never served; dropped once the
    # item is decided. None for items quarantined before revision 0005.
    original_path: Mapped[str | None] = mapped_column(String(256), default=None)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    source: Mapped[str] = mapped_column(String(128), default="")
    reviewed_by: Mapped[str] = mapped_column(String(128), default="")
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    review_note: Mapped[str] = mapped_column(Text, default="")


class ImportedFile(Base):
    """Lets ``pair import`` resume: a file already processed (same size and mtime) is skipped."""

    __tablename__ = "imported_file"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigId)
    mtime_ns: Mapped[int] = mapped_column(BigId)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_imported_file_lookup", "facility_id", "path", unique=True),)
