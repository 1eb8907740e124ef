"""Outputs of a report version: the study context, the DICOM SR and the downloadable formats
(narrative text, coded JSON, FHIR, HL7 v2 ORU^R01, DICOM SR)."""

from __future__ import annotations

import json
from dataclasses import replace
from io import BytesIO

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.audit.service import Actor, record
from pair.core.errors import NotFound
from pair.reporting.engine import Evaluation, evaluate
from pair.reporting.loader import get_module
from pair.reporting.models import Report, ReportVersion
from pair.reporting.outputs import fhir, hl7v2, sr, text
from pair.reporting.outputs.context import EvidenceInstance, ReportContext, Suggestion
from pair.reporting.records import get_version, load_report, module_of
from pair.repository.models import Instance, Patient, Series, Study

MAX_EVIDENCE = 5000
FORMATS = {
    "text": ("text/plain; charset=utf-8", "txt"),
    "coded": ("application/json", "json"),
    "fhir": ("application/fhir+json", "fhir.json"),
    "sr": ("application/dicom", "dcm"),
    "hl7": ("application/hl7-v2", "hl7"),
}


def context(session: Session, report: Report, version: ReportVersion) -> ReportContext:
    """The study around a report version (de-identified values from the repository index)."""
    study = session.scalar(select(Study).where(Study.study_uid == report.study_uid))
    if study is None:
        raise NotFound(f"Study {report.study_uid!r} of report {report.id} is no longer stored.")
    patient = session.get(Patient, study.patient_pk)
    rows = session.execute(
        select(
            Series.series_uid, Instance.sop_instance_uid, Instance.sop_class_uid, Series.modality
        )
        .join(Instance, Instance.series_pk == Series.id)
        # an SR can only reference instances whose SOP class is known
        .where(Series.study_pk == study.id, Series.modality != "SR", Instance.sop_class_uid != "")
        .order_by(Series.id, Instance.id)
        .limit(MAX_EVIDENCE)
    ).all()
    from pair.accounts.models import Facility, User

    facility = session.get(Facility, report.facility_id)
    signer = session.get(User, version.signed_by) if version.signed_by else None
    return ReportContext(
        study_uid=study.study_uid,
        patient_id=patient.pseudonym if patient else "",
        report_id=str(report.id),
        version=version.version,
        status=version.status,
        patient_name=study.patient_name,
        patient_birth_date=study.patient_birth_date,
        patient_sex=study.patient_sex,
        referring_physician_name=study.referring_physician_name,
        accession_number=study.accession_number,
        study_date=study.study_date,
        study_time=study.study_time,
        study_id=study.study_id,
        modality=(study.modalities or "").split("\\")[0],
        facility=facility.name if facility else "",
        author=version.signed_by_name or (signer.name if signer else ""),
        signed_at=version.signed_at,
        evidence=[EvidenceInstance(*r) for r in rows],
        suggestions=[
            Suggestion(s["element"], s["value"], s["algorithm"], s["version"], s.get("outcome", ""))
            for s in version.suggestions
        ],
    )


def _evaluation(report: Report, version: ReportVersion, strict: bool) -> Evaluation:
    return evaluate(module_of(report), version.inputs, allow_missing=not strict)


def version_sr(
    report_version: ReportVersion,
    study_context: ReportContext,
    previous: list[Dataset] | None = None,
) -> Dataset:
    """The DICOM SR of one report version for a study (what signing stores in the repository).

    ``study_context`` gives the study, patient pseudonym and evidence instances; the report
    fields (id, version, status, signer, AI suggestions) are taken from ``report_version``.
    """
    report = report_version.report
    module = get_module(report.module_id, report_version.module_version)
    ctx = replace(
        study_context,
        report_id=str(report.id),
        version=report_version.version,
        status=report_version.status,
        author=report_version.signed_by_name or study_context.author,
        signed_at=report_version.signed_at,
        suggestions=[
            Suggestion(s["element"], s["value"], s["algorithm"], s["version"], s.get("outcome", ""))
            for s in report_version.suggestions
        ],
    )
    return sr.build_sr(module, evaluate(module, report_version.inputs), ctx, previous or ())


def version_sr_with_previous(session: Session, report: Report, version: ReportVersion) -> Dataset:
    """The SR of ``version``; an amendment's SR references the SR of the version it replaces."""
    previous: list[Dataset] = []
    signed_before = [v for v in report.versions if v.version < version.version and v.signed_at]
    if signed_before:
        prev = signed_before[-1]
        previous.append(version_sr(prev, context(session, report, prev)))
    return version_sr(version, context(session, report, version), previous)


def render(
    session: Session, actor: Actor, report_id: int, fmt: str, number: int | None = None
) -> tuple[bytes, str, str]:
    """One output of one version: (body, media type, file name)."""
    if fmt not in FORMATS:
        raise NotFound(f"Unknown report format {fmt!r}; available: {', '.join(FORMATS)}.")
    report = load_report(session, actor, report_id)
    version = get_version(report, number)
    module = module_of(report)
    strict = fmt != "text"
    if strict and version.status == "draft":
        evaluate(module, version.inputs)  # a draft must be complete for coded outputs
    ev = _evaluation(report, version, strict)
    ctx = context(session, report, version)
    media, ext = FORMATS[fmt]
    record(
        session,
        actor,
        "report.download",
        "report",
        str(report.id),
        detail={"format": fmt, "version": version.version},
    )
    name = f"report-{report.id}-v{version.version}.{ext}"
    if fmt == "text":
        return text.narrative(module, ev, ctx).encode(), media, name
    if fmt == "hl7":
        return hl7v2.oru_r01(module, ev, ctx).encode(), media, name
    if fmt in ("coded", "fhir"):
        data = text.coded_json(module, ev, ctx) if fmt == "coded" else fhir.bundle(module, ev, ctx)
        return json.dumps(data, indent=2).encode(), media, name
    buf = BytesIO()
    version_sr_with_previous(session, report, version).save_as(buf, enforce_file_format=True)
    return buf.getvalue(), media, name
