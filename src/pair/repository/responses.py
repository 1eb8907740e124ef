"""DICOM JSON bodies for QIDO-RS results and the STOW-RS response."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.core.node import Node
from pair.dicom.jsonmodel import attributes, dataset_json, json_value, tag_hex
from pair.repository import retrieve
from pair.repository.ingest import IngestResult, Outcome
from pair.repository.models import Instance, Series, Study
from pair.repository.query import QidoQuery

DICOM_JSON = "application/dicom+json"

# PS3.18 Table I.2-1 / 10.5.3-2 failure reasons
FAILURE_REASONS = {
    "not_dicom": 0xC000,
    "unreadable": 0xC000,
    "truncated": 0xC000,
    "missing_uid": 0xC000,
    "invalid_uid": 0xC000,
    "invalid_pixel_module": 0xC000,
    "malformed_element": 0xC000,
    "sequence_too_deep": 0xC000,
    "transfer_syntax_mismatch": 0xC000,
    "inconsistent_hierarchy": 0xC000,
    "too_large": 0xA700,
    "limit_exceeded": 0xA700,
    "study_mismatch": 0xA900,
    "invalid_value": 0xA900,
    "conflict": 0x0111,
    "residual_phi": 0x0110,
    "processing_failed": 0x0110,
}


def _study_attrs(study: Study, base: str) -> dict[str, Any]:
    return attributes(
        {
            "StudyDate": study.study_date,
            "StudyTime": study.study_time,
            "AccessionNumber": study.accession_number,
            "InstanceAvailability": "ONLINE",
            "ModalitiesInStudy": [m for m in study.modalities.split("\\") if m],
            "ReferringPhysicianName": study.referring_physician_name,
            "RetrieveURL": f"{base}/studies/{study.study_uid}",
            "PatientName": study.patient_name,
            "PatientID": study.patient_id_value,
            "PatientBirthDate": study.patient_birth_date,
            "PatientSex": study.patient_sex,
            "PatientAge": study.patient_age,
            "StudyInstanceUID": study.study_uid,
            "StudyID": study.study_id,
            "StudyDescription": study.study_description,
            "NumberOfStudyRelatedSeries": study.num_series,
            "NumberOfStudyRelatedInstances": study.num_instances,
        }
    )


def _series_attrs(series: Series, study: Study, base: str) -> dict[str, Any]:
    return attributes(
        {
            "Modality": series.modality,
            "SeriesDescription": series.series_description,
            "SeriesNumber": series.series_number,
            "SeriesInstanceUID": series.series_uid,
            "BodyPartExamined": series.body_part_examined,
            "Manufacturer": series.manufacturer,
            "NumberOfSeriesRelatedInstances": series.num_instances,
            "PerformedProcedureStepStartDate": series.performed_procedure_step_start_date,
            "PerformedProcedureStepStartTime": series.performed_procedure_step_start_time,
            "RetrieveURL": f"{base}/studies/{study.study_uid}/series/{series.series_uid}",
        }
    )


def _instance_attrs(inst: Instance, series: Series, study: Study, base: str) -> dict[str, Any]:
    return attributes(
        {
            "SOPClassUID": inst.sop_class_uid,
            "SOPInstanceUID": inst.sop_instance_uid,
            "InstanceAvailability": "ONLINE",
            "InstanceNumber": inst.instance_number,
            "Rows": inst.rows,
            "Columns": inst.columns,
            "BitsAllocated": inst.bits_allocated,
            "NumberOfFrames": inst.number_of_frames,
            "RetrieveURL": (
                f"{base}/studies/{study.study_uid}/series/{series.series_uid}"
                f"/instances/{inst.sop_instance_uid}"
            ),
        }
    )


def _extra(node: Node, row: Instance | None, q: QidoQuery, have: dict[str, Any]) -> dict[str, Any]:
    """Attributes asked for with includefield that the index does not hold."""
    wanted = {t for t in q.requested if tag_hex(t) not in have}
    if row is None or not (wanted or q.include_all):
        return {}
    ds = retrieve.read_header(node, row)
    found = dataset_json(ds, only=None if q.include_all else wanted)
    out = {k: v for k, v in found.items() if k not in have and not k.startswith("7FE0")}
    for t in wanted:
        out.setdefault(tag_hex(t), json_value(t, None))
    return out


def _representative(
    session: Session, study: Study | None = None, series: Series | None = None
) -> Instance | None:
    stmt = select(Instance)
    if series is not None:
        stmt = stmt.where(Instance.series_pk == series.id)
    elif study is not None:
        stmt = stmt.join(Series, Instance.series_pk == Series.id).where(Series.study_pk == study.id)
    return session.scalar(stmt.order_by(Instance.id).limit(1))


def study_json(
    node: Node, session: Session, study: Study, q: QidoQuery, base: str
) -> dict[str, Any]:
    out = _study_attrs(study, base)
    if (q.requested - {int(k, 16) for k in out}) or q.include_all:
        out.update(_extra(node, _representative(session, study=study), q, out))
    return out


def series_json(
    node: Node,
    session: Session,
    series: Series,
    study: Study,
    q: QidoQuery,
    base: str,
    *,
    with_study: bool,
) -> dict[str, Any]:
    out = _series_attrs(series, study, base)
    if with_study:
        out = {**_study_attrs(study, base), **out}
    if (q.requested - {int(k, 16) for k in out}) or q.include_all:
        out.update(_extra(node, _representative(session, series=series), q, out))
    return out


def instance_json(
    node: Node,
    session: Session,
    inst: Instance,
    series: Series,
    study: Study,
    q: QidoQuery,
    base: str,
    *,
    with_series: bool,
    with_study: bool,
) -> dict[str, Any]:
    out = _instance_attrs(inst, series, study, base)
    if with_series:
        out = {**_series_attrs(series, study, base), **out}
    if with_study:
        out = {**_study_attrs(study, base), **out}
    if (q.requested - {int(k, 16) for k in out}) or q.include_all:
        out.update(_extra(node, inst, q, out))
    return out


def stow_response(results: list[IngestResult], base: str) -> tuple[int, dict[str, Any]]:
    """PS3.18 §10.5.3: 200 all stored, 202 some failed, 409 none stored."""
    referenced, failed = [], []
    for r in results:
        if r.accepted:
            url = (
                f"{base}/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_instance_uid}"
            )
            item = attributes(
                {
                    "ReferencedSOPClassUID": r.sop_class_uid,
                    "ReferencedSOPInstanceUID": r.original_sop_instance_uid,
                    "RetrieveURL": url,
                }
            )
            if r.burned_in_risk:
                item[tag_hex(0x00081196)] = json_value(0x00081196, 0xB000)
            referenced.append(item)
        else:
            item = attributes(
                {
                    "ReferencedSOPClassUID": r.sop_class_uid,
                    "ReferencedSOPInstanceUID": r.original_sop_instance_uid,
                    "FailureReason": FAILURE_REASONS.get(r.reason_code, 0x0110),
                }
            )
            item["00000902"] = {"vr": "LO", "Value": [r.reason]}  # ErrorComment: the precise reason
            failed.append(item)
    body: dict[str, Any] = {}
    if referenced:
        body[tag_hex(0x00081199)] = {"vr": "SQ", "Value": referenced}
    if failed:
        body[tag_hex(0x00081198)] = {"vr": "SQ", "Value": failed}
    studies = {r.study_uid for r in results if r.accepted}
    if len(studies) == 1:
        body[tag_hex(0x00081190)] = json_value(0x00081190, f"{base}/studies/{studies.pop()}")
    if not failed:
        return 200, body
    if referenced or any(r.outcome == Outcome.QUARANTINED for r in results):
        return 202, body
    return 409, body
