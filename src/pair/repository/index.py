"""Write de-identified instances into the study/series/instance index."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.db.base import utcnow
from pair.repository.models import Instance, Patient, Series, Study


def _text(ds: Dataset, keyword: str, limit: int = 256) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or value.__class__.__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)[:limit]
    return str(value)[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    storage_path: str
    size: int
    transfer_syntax_uid: str


def find_instance(session: Session, sop_instance_uid: str) -> Instance | None:
    return session.scalar(select(Instance).where(Instance.sop_instance_uid == sop_instance_uid))


def index_instance(
    session: Session,
    facility_id: int,
    ds: Dataset,
    stored: StoredFile,
    *,
    source: str,
    burned_in_risk: str = "",
) -> Instance:
    """Create patient/study/series rows as needed and add the instance; keep counters right."""
    pseudonym = _text(ds, "PatientID", 64)
    patient = session.scalar(select(Patient).where(Patient.pseudonym == pseudonym))
    if patient is None:
        patient = Patient(
            facility_id=facility_id,
            pseudonym=pseudonym,
            patient_sex=_text(ds, "PatientSex", 16),
            patient_birth_date=_text(ds, "PatientBirthDate", 8),
        )
        session.add(patient)
        session.flush()

    study_uid = str(ds.StudyInstanceUID)
    study = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if study is None:
        study = Study(
            facility_id=facility_id,
            patient_pk=patient.id,
            study_uid=study_uid,
            study_date=_text(ds, "StudyDate", 8),
            study_time=_text(ds, "StudyTime", 16),
            accession_number=_text(ds, "AccessionNumber", 64),
            study_id=_text(ds, "StudyID", 16),
            study_description=_text(ds, "StudyDescription"),
            referring_physician_name=_text(ds, "ReferringPhysicianName"),
            patient_name=_text(ds, "PatientName"),
            patient_id_value=pseudonym,
            patient_birth_date=_text(ds, "PatientBirthDate", 8),
            patient_sex=_text(ds, "PatientSex", 16),
            patient_age=_text(ds, "PatientAge", 4),
        )
        session.add(study)
        session.flush()

    series_uid = str(ds.SeriesInstanceUID)
    series = session.scalar(select(Series).where(Series.series_uid == series_uid))
    if series is None:
        modality = _text(ds, "Modality", 16)
        series = Series(
            study_pk=study.id,
            series_uid=series_uid,
            modality=modality,
            series_number=_int(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            body_part_examined=_text(ds, "BodyPartExamined", 64),
            manufacturer=_text(ds, "Manufacturer", 128),
            manufacturer_model_name=_text(ds, "ManufacturerModelName", 128),
            performed_procedure_step_start_date=_text(ds, "PerformedProcedureStepStartDate", 8),
            performed_procedure_step_start_time=_text(ds, "PerformedProcedureStepStartTime", 16),
        )
        session.add(series)
        # counters are incremented in SQL: concurrent writers to one study must not lose updates
        study.num_series = Study.num_series + 1  # type: ignore[assignment]
        modalities = set(filter(None, study.modalities.split("\\")))
        if modality and modality not in modalities:
            study.modalities = "\\".join(sorted(modalities | {modality}))
        session.flush()

    instance = Instance(
        series_pk=series.id,
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        instance_number=_int(ds, "InstanceNumber"),
        transfer_syntax_uid=stored.transfer_syntax_uid,
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        number_of_frames=_int(ds, "NumberOfFrames"),
        storage_path=stored.storage_path,
        sha256=stored.sha256,
        size=stored.size,
        source=source[:128],
        burned_in_risk=burned_in_risk[:256],
    )
    session.add(instance)
    series.num_instances = Series.num_instances + 1  # type: ignore[assignment]
    study.num_instances = Study.num_instances + 1  # type: ignore[assignment]
    study.updated_at = utcnow()
    session.flush()
    return instance
