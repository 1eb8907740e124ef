"""Portal pages for structured reports: the report form of a study and the study panel.

Thin routes over ``pair.reporting.service``. The form page is rendered on the server (fields,
relevance and preview of the saved draft); a small script re-evaluates as the user types with
``POST /api/reports/modules/{id}/evaluate``, saves with ``PUT /api/reports/{id}/inputs`` and
signs with ``POST /api/reports/{id}/sign`` (cookie-authenticated API calls carry the CSRF
header). Amending is a plain form post. Saves, the sign and the amend send the report revision
the page loaded, so a change made meanwhile by someone else gives 409 instead of being lost.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.audit.service import Actor, record
from pair.cde.catalog import catalog
from pair.core.errors import Conflict, Invalid, NotFound, PairError
from pair.reporting import service, worklist
from pair.reporting.engine import Evaluation, evaluate
from pair.reporting.loader import get_module, modules
from pair.reporting.model import Element, Module
from pair.reporting.models import Report, ReportVersion
from pair.repository.models import Study
from pair.repository.viewer import series_strip
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, page_actor, page_roles
from pair.web.templating import register_home_cards, register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
register_nav("Worklist", "/worklist", roles=(Role.RADIOLOGIST.value,), order=15)
register_home_cards(worklist.home_cards)
SECTIONS = ("findings", "impression", "recommendation")
DOWNLOADS = (
    ("text", "Text"),
    ("fhir", "FHIR R4 JSON"),
    ("sr", "DICOM SR"),
    ("coded", "CDE JSON"),
    ("hl7", "HL7 v2 ORU"),
)


def _cde_status(code: str | None) -> str:
    """Verification of an element's CDE id (verified / inferred / unassigned / local)."""
    if not code:
        return ""
    try:
        return catalog().element(code).verification
    except PairError:
        return ""


def _field(el: Element, version: ReportVersion, ev: Evaluation | None) -> dict[str, Any]:
    value = version.inputs.get(el.id)
    if value is None and ev is not None and el.id in ev.relevant:
        value = ev.values.get(el.id)  # defaults of relevant elements
    return {
        "el": el,
        "value": value,
        "cde_status": _cde_status(el.cde) if el.coded else "",
        "relevant": ev is None or el.id in ev.relevant,
        "required": ev is not None and el.id in ev.required,
        "optional_choice": el.type == "choice"
        and not el.required
        and el.required_if is None
        and not any(c.default for c in el.choices),
        "suggestions": [s for s in version.suggestions if s["element"] == el.id],
    }


def _computed(module: Module, ev: Evaluation | None) -> list[dict[str, Any]]:
    out = []
    for el in module.elements:
        if el.type != "computed":
            continue
        raw = ev.computed.get(el.id) if ev else None
        choice = el.choice(str(raw)) if raw is not None and el.choices else None
        labels = {c.value: c.label for c in el.choices}
        out.append({"el": el, "label": choice.label if choice else raw, "labels": labels})
    return out


def _context(session: Session, actor: Actor, report: Report) -> dict[str, Any]:
    version = service.current(report)
    module = service.module_of(report)
    editable = version.status == "draft" and actor.role in service.EDITORS
    ev: Evaluation | None
    if version.status == "draft":
        try:
            ev = evaluate(module, version.inputs, allow_missing=True)
        except Invalid:
            ev = None
    else:
        ev = evaluate(module, version.inputs)
    study = session.scalar(select(Study).where(Study.study_uid == report.study_uid))
    if study is None:
        raise NotFound(f"Study of report {report.id} is no longer stored.")
    return {
        "report": report,
        "rv": version,
        "module": module,
        "study": study,
        "fields": [_field(e, version, ev) for e in module.elements if e.is_input],
        "computed": _computed(module, ev),
        "evaluation": ev,
        "sections": SECTIONS,
        "editable": editable,
        "can_sign": editable and actor.role == Role.RADIOLOGIST.value,
        "can_amend": version.status != "draft" and actor.role in service.EDITORS,
        "downloads": DOWNLOADS,
        "summary": module.summary_element,
        "image_series": next(iter(series_strip(session, study)), None),
        "missing_labels": [module.element(e).label for e in (ev.missing if ev else [])],
        "modalities": [m for m in (study.modalities or "").split("\\") if m],
    }


@router.get("/worklist")
def worklist_page(
    request: Request,
    queue: str = "unreported",
    session: Session = SessionDep,
    actor: Actor = Depends(page_roles(Role.RADIOLOGIST)),
) -> Response:
    """The four reporting queues of the actor's facility, one shown at a time."""
    rows = worklist.items(session, actor.facility_id, actor.user_id, queue)
    ctx = {
        "queue": queue,
        "queues": worklist.QUEUES,
        "counts": worklist.counts(session, actor.facility_id, actor.user_id),
        "rows": rows,
        "limit": worklist.LIMIT,
    }
    return render(request, "reporting/worklist.html", ctx)


@router.get("/reports/{report_id}")
def report_page(
    report_id: int,
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_actor),
) -> Response:
    report = service.load_report(session, actor, report_id)
    ctx = _context(session, actor, report)
    record(session, actor, "report.read", "report", str(report.id))
    version = ctx["rv"]
    if request.query_params.get("signed") and version.signed_at:
        stored = "the DICOM SR is stored in the study" if version.sr_stored else "no SR stored"
        ctx["flash"] = f"Signed version {version.version} ({version.status}); {stored}."
        ctx["flash_kind"] = "success" if version.sr_stored else "warn"
    if request.query_params.get("amending"):
        ctx["flash"] = f"Version {version.version} started as a draft amendment."
    return render(request, "reporting/report.html", ctx)


@router.post("/studies/{study_uid}/reports")
def open_report(
    study_uid: str,
    module: str = Form(...),
    session: Session = SessionDep,
    actor: Actor = Depends(page_actor),
) -> Response:
    """Open the study's report for a module, creating the draft the first time."""
    module_id = get_module(module).id
    existing = [
        r for r in service.list_reports(session, actor, study_uid) if r.module_id == module_id
    ]
    if existing:
        return RedirectResponse(f"/reports/{existing[0].id}", status_code=303)
    report = service.create_draft(session, actor, study_uid, module_id)
    return RedirectResponse(f"/reports/{report.id}", status_code=303)


@router.post("/reports/{report_id}/amend")
def amend_report(
    report_id: int,
    request: Request,
    reason: str = Form(""),
    expected_revision: int | None = Form(None),
    session: Session = SessionDep,
    actor: Actor = Depends(page_actor),
) -> Response:
    try:
        service.amend(session, actor, report_id, reason, expected_revision=expected_revision)
    except (Invalid, Conflict) as exc:
        session.rollback()
        report = service.load_report(session, actor, report_id)
        ctx = _context(session, actor, report)
        ctx.update(flash=exc.message, flash_kind="error", amend_error=exc.message)
        return render(request, "reporting/report.html", ctx, exc.http_status)
    return RedirectResponse(f"/reports/{report_id}?amending=1", status_code=303)


def study_panel(session: Session, actor: Actor, studies: list[Study]) -> dict[str, Any]:
    """What the case page shows per study: its reports, the modules to start one, and which
    SR instance belongs to which report (so the series list links SRs to their report)."""
    uids = {s.study_uid for s in studies}
    by_study: dict[str, list[Report]] = defaultdict(list)
    sr_reports: dict[str, int] = {}
    if uids:
        for r in service.list_reports(session, actor):
            if r.study_uid in uids:
                by_study[r.study_uid].append(r)
                for v in r.versions:
                    if v.sr_sop_instance_uid:
                        sr_reports[v.sr_sop_instance_uid] = r.id
    # findings-based category modules first (RSNA), then the others by label
    all_modules = sorted(modules().values(), key=lambda m: (not m.id.startswith("rsna"), m.label))
    choices: dict[str, list[Module]] = {}
    for s in studies:
        kinds = set((s.modalities or "").split("\\"))
        fitting = [m for m in all_modules if kinds & set(m.modality.split("/"))]
        choices[s.study_uid] = fitting or all_modules
    return {
        "study_reports": dict(by_study),
        "report_modules": choices,
        "sr_reports": sr_reports,
        "module_labels": {m.id: m.label for m in all_modules},
        "can_report": actor.role in service.EDITORS,
    }
