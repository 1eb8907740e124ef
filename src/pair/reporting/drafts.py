"""The editing stage of a report: create a draft, edit it, preview it, amend a signed report.

Radiologists and admins of the study's facility edit; a signed version never changes, amending
adds a new draft version. Every change and read is audited.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.audit.service import Actor, record, record_change
from pair.core.errors import Conflict, Invalid
from pair.reporting.engine import evaluate
from pair.reporting.loader import get_module
from pair.reporting.models import Report, ReportVersion
from pair.reporting.outputs import text
from pair.reporting.records import (
    EDITORS,
    current,
    editable_draft,
    for_change,
    load_report,
    module_of,
    require_role,
    save,
    study_for,
)
from pair.reporting.rendering import context
from pair.reporting.validation import check_draft_inputs, check_suggestions


def create_draft(
    session: Session,
    actor: Actor,
    study_uid: str,
    module_id: str,
    inputs: dict[str, Any] | None = None,
    suggestions: list[dict[str, Any]] | None = None,
) -> Report:
    require_role(actor, EDITORS, "write reports")
    study = study_for(session, actor, study_uid)
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
        inputs=check_draft_inputs(module, inputs),
        suggestions=check_suggestions(module, suggestions),
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


def update_draft(
    session: Session,
    actor: Actor,
    report_id: int,
    inputs: dict[str, Any],
    suggestions: list[dict[str, Any]] | None = None,
    expected_revision: int | None = None,
) -> ReportVersion:
    require_role(actor, EDITORS, "write reports")
    report = for_change(session, actor, report_id, expected_revision)
    version = editable_draft(report)
    module = module_of(report)
    version.inputs = check_draft_inputs(module, inputs)
    if suggestions is not None:
        version.suggestions = check_suggestions(module, suggestions)
    version.edited_by = actor.user_id
    save(session, report)
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


def amend(
    session: Session,
    actor: Actor,
    report_id: int,
    reason: str,
    inputs: dict[str, Any] | None = None,
    expected_revision: int | None = None,
) -> ReportVersion:
    """Start a new draft version of a signed report; the signed versions stay as they are."""
    require_role(actor, EDITORS, "amend reports")
    report = for_change(session, actor, report_id, expected_revision)
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
        inputs=check_draft_inputs(module, dict(last.inputs) if inputs is None else inputs),
        suggestions=[],
        edited_by=actor.user_id,
        amend_reason=reason.strip()[:2000],
    )
    report.versions.append(version)
    report.current_version = version.version
    save(session, report)
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
