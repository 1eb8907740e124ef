"""Repository REST API beyond DICOMweb: uploads (files and zips) and the quarantine queue
(review and decisions: see ``pair.repository.quarantine``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.audit.service import Actor, record
from pair.core.errors import BadRequest, NotFound
from pair.core.node import Node
from pair.repository import ingest, quarantine, service
from pair.repository.formdata import receive_files
from pair.web.deps import SessionDep, get_node, require_roles

router = APIRouter(prefix="/api", tags=["repository"])
uploaders = require_roles(Role.DATA_MANAGER)
admin_only = require_roles(Role.ADMIN)


class UploadItem(BaseModel):
    file: str
    outcome: str
    reason: str = ""
    study_uid: str = ""
    sop_instance_uid: str = ""
    burned_in_risk: list[str] = []


class UploadSummary(BaseModel):
    stored: int
    duplicate: int
    quarantined: int
    rejected: int
    items: list[UploadItem]


class QuarantineOut(BaseModel):
    id: int
    sop_instance_uid: str
    study_uid: str
    modality: str
    reasons: list[dict[str, Any]]
    status: str
    source: str
    created_at: datetime
    reviewed_by: str
    review_note: str


class ReviewIn(BaseModel):
    note: str = Field(default="", max_length=2000)


class RemoveIn(ReviewIn):
    paths: list[str] | None = None  # a subset of the flagged tag paths; None: all of them


class ElementOut(BaseModel):
    path: str
    tag: str
    keyword: str
    name: str
    private_creator: str
    vr: str
    kind: str
    source: str
    message: str
    masked_value: str
    present: bool


class QuarantineReview(BaseModel):
    id: int
    sop_instance_uid: str
    study_uid: str
    modality: str
    status: str
    source: str
    created_at: datetime
    reviewed_by: str
    reviewed_at: datetime | None
    review_note: str
    original_kept: bool
    has_image: bool
    elements: list[ElementOut]


class DecisionOut(BaseModel):
    item_id: int
    outcome: str
    sop_instance_uid: str
    study_uid: str
    reasons: list[dict[str, Any]]


_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                },
            }
        }
    },
}


@router.post("/upload", response_model=UploadSummary, openapi_extra={"requestBody": _UPLOAD_BODY})
async def upload(
    request: Request,
    node: Node = Depends(get_node),
    actor: Actor = Depends(uploaders),
) -> UploadSummary:
    """Upload DICOM files or zip archives (``files`` fields of a multipart/form-data body);
    each instance is reported with its outcome.

    The body is streamed to disk and limited to ``PAIR_MAX_UPLOAD_BYTES`` (with or without a
    Content-Length); zips to the inflation limits (413 for a bomb, nothing stored)."""
    if actor.facility_id is None:
        raise NotFound("This account belongs to no facility.")
    facility_id = actor.facility_id
    settings = node.settings
    async with receive_files(request, settings.tmp_dir, settings.max_upload_bytes) as files:
        if not files:
            raise BadRequest("No files in the upload.")
        results = await run_in_threadpool(
            service.ingest_upload_files, node, facility_id, files, actor
        )
    counts = {o.value: 0 for o in ingest.Outcome}
    items = []
    for name, r in results:
        counts[r.outcome.value] += 1
        items.append(
            UploadItem(
                file=name,
                outcome=r.outcome.value,
                reason=r.reason,
                study_uid=r.study_uid,
                sop_instance_uid=r.sop_instance_uid,
                burned_in_risk=r.burned_in_risk,
            )
        )
    return UploadSummary(**counts, items=items)


@router.get("/quarantine", response_model=list[QuarantineOut])
def list_quarantine(
    status: str = "pending",
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> list[QuarantineOut]:
    if status not in (*quarantine.STATUSES, "all"):
        raise BadRequest(f"status must be one of {', '.join(quarantine.STATUSES)} or all.")
    _, items = service.list_quarantine(
        session, actor.facility_id or 0, None if status == "all" else status
    )
    record(session, actor, "quarantine.list", "quarantine_item", "", detail={"n": len(items)})
    return [QuarantineOut.model_validate(i, from_attributes=True) for i in items]


@router.get("/quarantine/{item_id}", response_model=QuarantineReview)
def review(
    item_id: int,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> QuarantineReview:
    """One item: each offending element by keyword/name with its value masked (never raw)."""
    return QuarantineReview.model_validate(quarantine.review(node, session, item_id, actor))


@router.get(
    "/quarantine/{item_id}/preview.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def preview(
    item_id: int,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    """The held image as PNG (first frame, at most 512 px) for the reviewer."""
    png = quarantine.preview_png(node, session, item_id, actor)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post("/quarantine/{item_id}/remove-and-store", response_model=DecisionOut)
def remove_and_store(
    item_id: int,
    body: RemoveIn,
    node: Node = Depends(get_node),
    actor: Actor = Depends(admin_only),
) -> DecisionOut:
    """Remove the flagged elements, re-scan, store when clean (else it stays quarantined)."""
    decision = quarantine.remove_and_store(node, item_id, actor, body.note, body.paths)
    return DecisionOut.model_validate(decision, from_attributes=True)


@router.post("/quarantine/{item_id}/rerun-and-store", response_model=DecisionOut)
def rerun_and_store(
    item_id: int,
    body: ReviewIn,
    node: Node = Depends(get_node),
    actor: Actor = Depends(admin_only),
) -> DecisionOut:
    """De-identify the instance as received with the strict profile, re-scan, store if clean."""
    decision = quarantine.rerun_and_store(node, item_id, actor, body.note)
    return DecisionOut.model_validate(decision, from_attributes=True)


@router.post("/quarantine/{item_id}/reject", response_model=DecisionOut)
def reject(
    item_id: int,
    body: ReviewIn,
    node: Node = Depends(get_node),
    actor: Actor = Depends(admin_only),
) -> DecisionOut:
    """Discard the instance; the item and its audit trail stay."""
    decision = quarantine.reject(node, item_id, actor, body.note)
    return DecisionOut.model_validate(decision, from_attributes=True)
