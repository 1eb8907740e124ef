"""Report records: create, edit, preview, sign, amend, render; final values as case labels.

Rules: radiologists (and admins, except for signing) of the study's facility edit reports;
only a radiologist signs; a signed version never changes (amending adds a version). Users of
another facility get 404, as if the report did not exist. Every read is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from pair.accounts.models import Role
from pair.audit.service import Actor, record, record_change
from pair.core.errors import Conflict, Forbidden, Invalid, NotFound, PairError
from pair.core.node import Node
from pair.reporting.engine import Evaluation, coerce_value, evaluate
from pair.reporting.labels import CaseLabel, final_labels  # noqa: F401  (re-exported)
from pair.reporting.loader import get_module
from pair.reporting.model import Module
from pair.reporting.models import Report, ReportVersion
from pair.reporting.outputs import fhir, hl7v2, sr, text
from pair.reporting.outputs.context import EvidenceInstance, ReportContext, Suggestion
from pair.repository.models import Instance, Patient, Series, Study

StoreInstance = Callable[[Dataset], Any]
EDITORS = (Role.RADIOLOGIST.value, Role.ADMIN.value)
MAX_EVIDENCE = 5000
FORMATS = {
    "text": ("text/plain; charset=utf-8", "txt"),
    "coded": ("application/json", "json"),
    "fhir": ("application/fhir+json", "fhir.json"),
    "sr": ("application/dicom", "dcm"),
    "hl7": ("application/hl7-v2", "hl7"),
}


def _require(actor: Actor, roles: tuple[str, ...], what: str) -> None:
    if actor.role not in roles:
        raise Forbidden(f"Role {actor.role!r} may not {what}; required: {', '.join(roles)}.")


def _same_facility(actor: Actor, facility_id: int) -> bool:
    return actor.user_id is None or actor.facility_id == facility_id


def _study(session: Session, actor: Actor, study_uid: str) -> Study:
    study = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if study is None or not _same_facility(actor, study.facility_id):
        raise NotFound(f"No study {study_uid!r} in your facility's repository.")
    return study


def load_report(session: Session, actor: Actor, report_id: int, for_update: bool = False) -> Report:
    """``for_update``: lock the row until the transaction ends (SELECT ... FOR UPDATE on
    PostgreSQL, so concurrent writers of one report queue up and each sees the previous
    one's result; SQLite has no row locks, there the revision check at flush decides)."""
    report = session.get(
        Report, report_id, with_for_update=for_update or None, populate_existing=for_update
    )
    if report is None or not _same_facility(actor, report.facility_id):
        raise NotFound(f"No report {report_id}.")
    return report


def _for_change(
    session: Session, actor: Actor, report_id: int, expected_revision: int | None
) -> Report:
    """The report, locked, checked against the revision the client loaded."""
    report = load_report(session, actor, report_id, for_update=True)
    if expected_revision is not None and expected_revision != report.revision:
        raise Conflict(
            f"Report {report.id} was changed by someone else since you loaded it (it is at "
            f"revision {report.revision}, you loaded revision {expected_revision}); reload "
            "the report and apply your changes again."
        )
    return report


def _save(session: Session, report: Report, at: datetime | None = None) -> None:
    """Flush the change; a concurrent writer that got there first means 409, not a lost update."""
    report.updated_at = at or datetime.now(UTC)  # every change bumps the report's revision
    report_id = report.id  # the object is unusable once a flush failed
    try:
        session.flush()
    except StaleDataError as exc:
        raise Conflict(
            f"Report {report_id} was changed by someone else at the same time; reload the "
            "report and apply your changes again."
        ) from exc


def current(report: Report) -> ReportVersion:
    return report.versions[-1]


def module_of(report: Report) -> Module:
    return get_module(report.module_id, report.module_version)


def _check_suggestions(module: Module, raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise Invalid("suggestions must be a list of {element, value, algorithm, version}.")
    out, problems = [], []
    for i, s in enumerate(raw):
        if not isinstance(s, dict) or not s.get("algorithm") or not s.get("version"):
            problems.append(f"suggestions[{i}]: needs element, value, algorithm and version")
            continue
        el = module.by_id.get(str(s.get("element")))
        if el is None or not el.is_input:
            problems.append(f"suggestions[{i}]: unknown input element {s.get('element')!r}")
            continue
        value, error = coerce_value(el, s.get("value"))
        if error:
            problems.append(f"suggestions[{i}] ({el.id}): {error}")
            continue
        out.append(
            {
                "element": el.id,
                "value": value,
                "algorithm": str(s["algorithm"])[:64],
                "version": str(s["version"])[:64],
                "outcome": "",
            }
        )
    if problems:
        raise Invalid("Invalid AI suggestions: " + "; ".join(problems), details=problems)
    return out


def _check_draft_inputs(module: Module, inputs: Any) -> dict[str, Any]:
    """A draft may be incomplete, but every value it holds must be valid."""
    if inputs is None:
        return {}
    evaluate(module, inputs, allow_missing=True)
    return dict(inputs)


def create_draft(
    session: Session,
    actor: Actor,
    study_uid: str,
    module_id: str,
    inputs: dict[str, Any] | None = None,
    suggestions: list[dict[str, Any]] | None = None,
) -> Report:
    _require(actor, EDITORS, "write reports")
    study = _study(session, actor, study_uid)
    module = get_module(module_id)
    existing = session.scalar(
        select(Report).where(Report.study_uid == study_uid, Report.module_id == module.id)
    )
    if existing is not None:
        raise Conflict(
            f"Study already has a {module.id} report (id {existing.id}); edit or amend that one."
        )
    report = Report(
        facility_id=study.facility_id,
        study_uid=study_uid,
        module_id=module.id,
        module_version=module.version,
        status="draft",
        current_version=1,
        created_by=actor.user_id,
    )
    version = ReportVersion(
        version=1,
        status="draft",
        module_version=module.version,
        inputs=_check_draft_inputs(module, inputs),
        suggestions=_check_suggestions(module, suggestions),
        edited_by=actor.user_id,
    )
    report.versions.append(version)
    session.add(report)
    session.flush()
    record(session, actor, "report.create", "report", str(report.id), detail={"module": module.key})
    record_change(
        session, report.facility_id, "report.draft", "report", str(report.id), shareable=False
    )
    return report


def _editable_draft(report: Report) -> ReportVersion:
    version = current(report)
    if version.status != "draft":
        raise Conflict(
            f"Version {version.version} of report {report.id} is signed and cannot "
            "change; amend the report to create a new version."
        )
    return version


def update_draft(
    session: Session,
    actor: Actor,
    report_id: int,
    inputs: dict[str, Any],
    suggestions: list[dict[str, Any]] | None = None,
    expected_revision: int | None = None,
) -> ReportVersion:
    _require(actor, EDITORS, "write reports")
    report = _for_change(session, actor, report_id, expected_revision)
    version = _editable_draft(report)
    module = module_of(report)
    version.inputs = _check_draft_inputs(module, inputs)
    if suggestions is not None:
        version.suggestions = _check_suggestions(module, suggestions)
    version.edited_by = actor.user_id
    _save(session, report)
    record(
        session,
        actor,
        "report.update",
        "report",
        str(report.id),
        detail={"version": version.version},
    )
    return version


def preview(
    session: Session, actor: Actor, report_id: int, inputs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Live evaluation of the draft (or of ``inputs``): relevant fields, missing, text."""
    report = load_report(session, actor, report_id)
    version = current(report)
    module = module_of(report)
    ev = evaluate(module, version.inputs if inputs is None else inputs, allow_missing=True)
    ctx = context(session, report, version)
    record(session, actor, "report.preview", "report", str(report.id))
    return {**ev.to_dict(), "narrative": text.narrative(module, ev, ctx), "wording": module.wording}


def _outcomes(suggestions: list[dict[str, Any]], ev: Evaluation) -> list[dict[str, Any]]:
    out = []
    for s in suggestions:
        final = ev.values.get(s["element"])
        outcome = (
            "rejected" if final is None else ("accepted" if final == s["value"] else "changed")
        )
        out.append({**s, "outcome": outcome})
    return out


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


def build_sr(
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


def _build_sr(session: Session, report: Report, version: ReportVersion) -> Dataset:
    previous: list[Dataset] = []
    signed_before = [v for v in report.versions if v.version < version.version and v.signed_at]
    if signed_before:
        prev = signed_before[-1]
        previous.append(build_sr(prev, context(session, report, prev)))
    return build_sr(version, context(session, report, version), previous)


def sign(
    session: Session, actor: Actor, report_id: int, expected_revision: int | None = None
) -> tuple[ReportVersion, Dataset | None]:
    """Sign the draft version; returns it and its SR (None when the study has no images)."""
    _require(actor, (Role.RADIOLOGIST.value,), "sign reports")
    report = _for_change(session, actor, report_id, expected_revision)
    version = _editable_draft(report)
    module = module_of(report)
    ev = evaluate(module, version.inputs)  # strict: every required value present
    version.suggestions = _outcomes(list(version.suggestions), ev)
    version.status = "final" if version.version == 1 else "amended"
    version.signed_by = actor.user_id
    version.signed_by_name = actor.user_name
    version.signed_at = datetime.now(UTC)
    version.evaluation = ev.to_dict()
    report.status = version.status
    _save(session, report, version.signed_at)  # before any query could autoflush it
    ctx = context(session, report, version)
    version.text = text.narrative(module, ev, ctx)
    dataset = _build_sr(session, report, version) if ctx.evidence else None
    if dataset is not None:
        version.sr_sop_instance_uid = str(dataset.SOPInstanceUID)
    record(
        session,
        actor,
        "report.sign",
        "report",
        str(report.id),
        detail={
            "version": version.version,
            "status": version.status,
            "suggestions": [s["outcome"] for s in version.suggestions],
        },
    )
    record_change(session, report.facility_id, "report.signed", "report", str(report.id))
    return version, dataset


@dataclass
class SignResult:
    report_id: int
    version: int
    status: str
    sr_sop_instance_uid: str
    sr_stored: bool
    sr_error: str = ""
    suggestions: list[dict[str, Any]] = field(default_factory=list)
    revision: int = 0


def sign_and_store(
    node: Node,
    actor: Actor,
    report_id: int,
    store_instance: StoreInstance | None,
    expected_revision: int | None = None,
) -> SignResult:
    """Sign in one transaction, then hand the SR to ``store_instance`` (the repository).

    Storing runs after the commit because the repository opens its own transaction; a failed
    store leaves the report signed with ``sr_stored`` false and the reason returned.
    """
    with node.db.session() as session:
        version, dataset = sign(session, actor, report_id, expected_revision)
        result = SignResult(
            report_id,
            version.version,
            version.status,
            version.sr_sop_instance_uid,
            False,
            suggestions=list(version.suggestions),
            revision=version.report.revision,
        )
    if dataset is None:
        result.sr_error = "The study has no stored images to reference; no SR was created."
        return result
    if store_instance is None:
        result.sr_error = "No SR store configured."
        return result
    try:
        store_instance(dataset)
    except PairError as exc:
        result.sr_error = exc.message
        return result
    with node.db.session() as session:
        stored = session.scalar(
            select(ReportVersion).where(
                ReportVersion.report_id == report_id, ReportVersion.version == version.version
            )
        )
        if stored is not None:
            stored.sr_stored = True
    result.sr_stored = True
    return result


def amend(
    session: Session,
    actor: Actor,
    report_id: int,
    reason: str,
    inputs: dict[str, Any] | None = None,
    expected_revision: int | None = None,
) -> ReportVersion:
    """Start a new draft version of a signed report; the signed versions stay as they are."""
    _require(actor, EDITORS, "amend reports")
    report = _for_change(session, actor, report_id, expected_revision)
    last = current(report)
    if last.status == "draft":
        raise Conflict(
            f"Report {report.id} already has an unsigned version {last.version}; "
            "edit and sign it instead."
        )
    if not reason or not reason.strip():
        raise Invalid("An amendment needs a reason.")
    module = module_of(report)
    version = ReportVersion(
        version=last.version + 1,
        status="draft",
        module_version=report.module_version,
        inputs=_check_draft_inputs(module, dict(last.inputs) if inputs is None else inputs),
        suggestions=[],
        edited_by=actor.user_id,
        amend_reason=reason.strip()[:2000],
    )
    report.versions.append(version)
    report.current_version = version.version
    _save(session, report)
    record(
        session,
        actor,
        "report.amend",
        "report",
        str(report.id),
        detail={"version": version.version},
    )
    record_change(
        session, report.facility_id, "report.amending", "report", str(report.id), shareable=False
    )
    return version


def get_version(report: Report, number: int | None) -> ReportVersion:
    if number is None:
        return current(report)
    found = next((v for v in report.versions if v.version == number), None)
    if found is None:
        raise NotFound(
            f"Report {report.id} has no version {number}; versions: "
            f"{', '.join(str(v.version) for v in report.versions)}."
        )
    return found


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
        import json

        data = text.coded_json(module, ev, ctx) if fmt == "coded" else fhir.bundle(module, ev, ctx)
        return json.dumps(data, indent=2).encode(), media, name
    from io import BytesIO

    buf = BytesIO()
    _build_sr(session, report, version).save_as(buf, enforce_file_format=True)
    return buf.getvalue(), media, name


def list_reports(session: Session, actor: Actor, study_uid: str | None = None) -> list[Report]:
    stmt = select(Report).order_by(Report.id)
    if actor.user_id is not None:
        stmt = stmt.where(Report.facility_id == actor.facility_id)
    if study_uid:
        stmt = stmt.where(Report.study_uid == study_uid)
    reports = list(session.scalars(stmt))
    record(session, actor, "report.list", "report", "", detail={"count": len(reports)})
    return reports
