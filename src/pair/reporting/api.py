"""Thin HTTP layer over ``pair.reporting.service`` under ``/api/reports``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pair.audit.service import Actor, record
from pair.core.errors import Conflict
from pair.core.node import Node
from pair.reporting import service
from pair.reporting.cards_xml import export_xml
from pair.reporting.conditions import to_yaml
from pair.reporting.engine import evaluate
from pair.reporting.loader import get_module, modules
from pair.reporting.model import Module
from pair.reporting.models import Report, ReportVersion
from pair.web.deps import SessionDep, current_actor, get_node

router = APIRouter(prefix="/api/reports", tags=["reporting"])


class CreateReport(BaseModel):
    study_uid: str = Field(min_length=1, max_length=64)
    module: str = Field(min_length=1, max_length=64)
    inputs: dict[str, Any] = {}
    suggestions: list[dict[str, Any]] | None = None


REVISION_HELP = (
    "The report's revision as loaded (GET answers it as `revision`); when given and the "
    "report has changed since, the request fails with 409 Conflict instead of overwriting."
)


class UpdateInputs(BaseModel):
    inputs: dict[str, Any]
    suggestions: list[dict[str, Any]] | None = None
    expected_revision: int | None = Field(default=None, description=REVISION_HELP)


class SignBody(BaseModel):
    expected_revision: int | None = Field(default=None, description=REVISION_HELP)
    confirm_override: bool = Field(
        default=False,
        description="Sign although the assigned category contradicts the findings (a 409 "
        "names the contradiction first).",
    )


class PreviewBody(BaseModel):
    inputs: dict[str, Any] | None = None


class AmendBody(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)
    inputs: dict[str, Any] | None = None
    expected_revision: int | None = Field(default=None, description=REVISION_HELP)


def module_form(m: Module) -> dict[str, Any]:
    """What a form needs: elements in order with types, choices, limits and conditions."""
    return {
        "id": m.id,
        "version": m.version,
        "label": m.label,
        "description": m.description,
        "modality": m.modality,
        "wording": m.wording,
        "wording_note": m.wording_note,
        "summary_element": m.summary_element,
        "references": m.references,
        "elements": [
            {
                "id": e.id,
                "type": e.type,
                "kind": e.kind,
                "label": e.label,
                "hint": e.hint,
                "cde": e.cde,
                "coded": e.coded,
                "required": e.required,
                "relevant_if": to_yaml(e.relevant_if) if e.relevant_if else None,
                "required_if": to_yaml(e.required_if) if e.required_if else None,
                "choices": [c.model_dump() for c in e.choices],
                "minimum": e.minimum,
                "maximum": e.maximum,
                "unit": e.unit,
                "max_choices": e.max_choices,
            }
            for e in m.elements
        ],
        "endpoints": [{"id": ep.id, "label": ep.label} for ep in m.endpoints],
    }


def _version(v: ReportVersion) -> dict[str, Any]:
    return {
        "version": v.version,
        "status": v.status,
        "module_version": v.module_version,
        "inputs": v.inputs,
        "suggestions": v.suggestions,
        "evaluation": v.evaluation,
        "text": v.text,
        "signed_by": v.signed_by_name or None,
        "signed_at": v.signed_at.isoformat() if v.signed_at else None,
        "amend_reason": v.amend_reason or None,
        "created_at": v.created_at.isoformat(),
        "sr_sop_instance_uid": v.sr_sop_instance_uid or None,
        "sr_stored": v.sr_stored,
    }


def _report(r: Report) -> dict[str, Any]:
    return {
        "id": r.id,
        "study_uid": r.study_uid,
        "facility_id": r.facility_id,
        "module": r.module_id,
        "module_version": r.module_version,
        "status": r.status,
        "revision": r.revision,
        "current_version": r.versions[-1].version,
        "versions": [
            {
                "version": v.version,
                "status": v.status,
                "signed_at": v.signed_at.isoformat() if v.signed_at else None,
            }
            for v in r.versions
        ],
        "current": _version(r.versions[-1]),
        "downloads": {fmt: f"/api/reports/{r.id}/download/{fmt}" for fmt in service.FORMATS},
    }


@router.get("/modules")
def list_modules(actor: Actor = Depends(current_actor)) -> list[dict[str, Any]]:
    return [
        {
            "id": m.id,
            "version": m.version,
            "label": m.label,
            "modality": m.modality,
            "wording": m.wording,
        }
        for m in modules().values()
    ]


@router.get("/modules/{module_id}")
def get_module_form(module_id: str, actor: Actor = Depends(current_actor)) -> dict[str, Any]:
    return module_form(get_module(module_id))


@router.post("/modules/{module_id}/evaluate")
def evaluate_module(
    module_id: str, body: PreviewBody, actor: Actor = Depends(current_actor)
) -> dict[str, Any]:
    """Evaluate inputs without a report (no case data, nothing stored or audited): the form's
    live preview of relevance, missing values, computed category and section text."""
    ev = evaluate(get_module(module_id), body.inputs or {}, allow_missing=True)
    return ev.to_dict()


@router.get("/modules/{module_id}/cards.xml")
def get_module_xml(module_id: str, actor: Actor = Depends(current_actor)) -> Response:
    return Response(export_xml(get_module(module_id)), media_type="application/xml")


@router.get("")
def list_reports(
    study_uid: str | None = Query(default=None),
    actor: Actor = Depends(current_actor),
    session: Session = SessionDep,
) -> list[dict[str, Any]]:
    return [_report(r) for r in service.list_reports(session, actor, study_uid)]


@router.post("", status_code=201)
def create_report(
    body: CreateReport,
    actor: Actor = Depends(current_actor),
    session: Session = SessionDep,
) -> dict[str, Any]:
    report = service.create_draft(
        session, actor, body.study_uid, body.module, body.inputs, body.suggestions
    )
    return _report(report)


@router.get("/{report_id}")
def get_report(
    report_id: int,
    actor: Actor = Depends(current_actor),
    session: Session = SessionDep,
) -> dict[str, Any]:
    report = service.load_report(session, actor, report_id)
    record(session, actor, "report.read", "report", str(report_id))
    return _report(report)


@router.put("/{report_id}/inputs")
def update_inputs(
    report_id: int,
    body: UpdateInputs,
    actor: Actor = Depends(current_actor),
    session: Session = SessionDep,
) -> dict[str, Any]:
    service.update_draft(
        session, actor, report_id, body.inputs, body.suggestions, body.expected_revision
    )
    return _report(service.load_report(session, actor, report_id))


@router.post("/{report_id}/preview")
def preview(
    report_id: int,
    body: PreviewBody | None = None,
    actor: Actor = Depends(current_actor),
    session: Session = SessionDep,
) -> dict[str, Any]:
    return service.preview(session, actor, report_id, body.inputs if body else None)


SRStoreFactory = Callable[[Node, Actor, int], service.StoreInstance]


def _repository_store(node: Node, actor: Actor, facility_id: int) -> service.StoreInstance:
    """The repository's ingest: the signed SR is indexed like any derived instance."""

    def store(dataset: Any) -> Any:
        try:
            ingest = importlib.import_module("pair.repository.ingest")
        except ImportError as exc:
            raise Conflict(
                "This node cannot store derived DICOM objects "
                "(pair.repository.ingest is not available)."
            ) from exc
        return ingest.store_derived_instance(
            node, facility_id, dataset, source="report", actor=actor
        )

    return store


def get_sr_store() -> SRStoreFactory:
    """Where a signed report's SR goes: a FastAPI dependency, so a test can swap it through
    ``app.dependency_overrides[get_sr_store]``; the real one is the repository's ingest."""
    return _repository_store


@router.post("/{report_id}/sign")
def sign(
    report_id: int,
    body: SignBody | None = None,
    actor: Actor = Depends(current_actor),
    node: Node = Depends(get_node),
    sr_store: SRStoreFactory = Depends(get_sr_store),
) -> dict[str, Any]:
    with node.db.session() as session:
        facility_id = service.load_report(session, actor, report_id).facility_id
    result = service.sign_and_store(
        node,
        actor,
        report_id,
        sr_store(node, actor, facility_id),
        body.expected_revision if body else None,
        confirm_override=body.confirm_override if body else False,
    )
    return asdict(result)


@router.post("/{report_id}/amend")
def amend(
    report_id: int,
    body: AmendBody,
    actor: Actor = Depends(current_actor),
    session: Session = SessionDep,
) -> dict[str, Any]:
    service.amend(session, actor, report_id, body.reason, body.inputs, body.expected_revision)
    return _report(service.load_report(session, actor, report_id))


@router.get("/{report_id}/versions")
def versions(
    report_id: int,
    actor: Actor = Depends(current_actor),
    session: Session = SessionDep,
) -> list[dict[str, Any]]:
    report = service.load_report(session, actor, report_id)
    record(session, actor, "report.read", "report", str(report_id))
    return [_version(v) for v in report.versions]


@router.get("/{report_id}/download/{fmt}")
def download(
    report_id: int,
    fmt: str,
    version: int | None = Query(default=None),
    actor: Actor = Depends(current_actor),
    session: Session = SessionDep,
) -> Response:
    body, media, name = service.render(session, actor, report_id, fmt, version)
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
