"""The hub's side of site → hub for data that are not DICOM: clinical records and final reports,
stored in the hub's own clinical and report tables for the pushing site-node's facility.

Each push carries an idempotency key; a key already applied (``hub_receipt``) is answered as
success without a second write, so a retry after a cut connection changes nothing. A study is
looked up only in the caller's facility: another facility's study is "not here" (404), exactly
like one whose images have not arrived yet, so a site can neither write nor probe another
facility's cases.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.policy import Action, authorize
from pair.audit.service import Actor, record
from pair.clinical.dictionary import load_dictionary
from pair.clinical.service import raise_invalid, store_clinical
from pair.core.errors import Invalid, NotFound
from pair.reporting.models import Report, ReportVersion
from pair.repository.models import Patient, Study
from pair.sharing.models import HubReceipt

REPORT_STATUSES = ("final", "amended")


def _facility(actor: Actor) -> int:
    authorize(actor, Action.HUB_PUSH, actor.facility_id)
    assert actor.facility_id is not None
    return actor.facility_id


def _seen(session: Session, facility_id: int, key: str) -> HubReceipt | None:
    if not key or len(key) > 64:
        raise Invalid("idempotency_key must be 1-64 characters.")
    return session.scalar(
        select(HubReceipt).where(
            HubReceipt.facility_id == facility_id, HubReceipt.idempotency_key == key
        )
    )


def _receipt(session: Session, facility_id: int, key: str, kind: str, ref: str) -> None:
    session.add(HubReceipt(facility_id=facility_id, idempotency_key=key, kind=kind, object_ref=ref))
    session.flush()


def _study(session: Session, facility_id: int, study_uid: str) -> Study:
    study = session.scalar(
        select(Study).where(Study.study_uid == study_uid, Study.facility_id == facility_id)
    )
    if study is None:
        raise NotFound("No study with this UID in your facility at the hub (yet).")
    return study


def receive_clinical(
    session: Session, actor: Actor, key: str, study_uids: list[str], raw: dict[str, Any]
) -> dict[str, Any]:
    """A case's clinical record, found at the hub by any of its studies' UIDs."""
    facility_id = _facility(actor)
    if (done := _seen(session, facility_id, key)) is not None:
        return {"status": "duplicate", "case": done.object_ref}
    patient_pk = session.scalar(
        select(Study.patient_pk).where(
            Study.study_uid.in_(study_uids[:100]), Study.facility_id == facility_id
        )
    )
    if patient_pk is None:
        raise NotFound("No study with these UIDs in your facility at the hub (yet).")
    patient = session.get(Patient, patient_pk)
    assert patient is not None
    data, errors = load_dictionary().validate(raw)
    if errors:
        raise_invalid(errors)
    store_clinical(session, actor, patient, data)
    _receipt(session, facility_id, key, "clinical", patient.pseudonym)
    return {"status": "stored", "case": patient.pseudonym}


def receive_report(
    session: Session, actor: Actor, key: str, body: dict[str, Any]
) -> dict[str, Any]:
    """A final (or amended) report version of one study: the report row is created on its first
    version; a version already present is left as it is."""
    facility_id = _facility(actor)
    if (done := _seen(session, facility_id, key)) is not None:
        return {"status": "duplicate", "report": done.object_ref}
    study = _study(session, facility_id, str(body.get("study_uid", "")))
    status, version = body.get("status"), body.get("version")
    if status not in REPORT_STATUSES or not isinstance(version, int) or version < 1:
        raise Invalid("A shared report version must be final or amended, with a version >= 1.")
    module_id = str(body.get("module_id", ""))[:64]
    module_version = str(body.get("module_version", ""))[:16]
    if not module_id:
        raise Invalid("module_id is required.")
    report = session.scalar(
        select(Report).where(Report.study_uid == study.study_uid, Report.module_id == module_id)
    )
    if report is None:
        report = Report(
            facility_id=facility_id,
            study_uid=study.study_uid,
            module_id=module_id,
            module_version=module_version,
            status=status,
            current_version=version,
        )
        session.add(report)
        session.flush()
    elif report.facility_id != facility_id:  # cannot happen: study UIDs are facility-bound
        raise NotFound("No study with this UID in your facility at the hub (yet).")
    exists = session.scalar(
        select(ReportVersion.id).where(
            ReportVersion.report_id == report.id, ReportVersion.version == version
        )
    )
    if exists is None:
        signed = body.get("signed_at")
        try:
            signed_at = datetime.fromisoformat(signed) if isinstance(signed, str) else None
        except ValueError:
            raise Invalid("signed_at must be an ISO 8601 date-time.") from None
        session.add(
            ReportVersion(
                report_id=report.id,
                version=version,
                status=status,
                module_version=module_version,
                inputs=body.get("inputs") or {},
                evaluation=body.get("evaluation"),
                text=str(body.get("text", "")),
                signed_by_name=f"site {actor.user_name}",
                signed_at=signed_at,
                amend_reason=str(body.get("amend_reason", "")),
                sr_sop_instance_uid=str(body.get("sr_sop_instance_uid", ""))[:64],
            )
        )
        if version >= report.current_version:
            report.current_version, report.status = version, status
        session.flush()
    _receipt(session, facility_id, key, "report", str(report.id))
    record(session, actor, "hub.report.receive", "report", str(report.id), detail={"v": version})
    return {"status": "stored", "report": str(report.id)}
