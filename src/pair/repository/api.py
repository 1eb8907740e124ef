"""Repository REST API beyond DICOMweb: uploads (files and zips) and the quarantine queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.audit.service import Actor, record
from pair.core.errors import BadRequest, NotFound
from pair.core.node import Node
from pair.repository import ingest, service
from pair.repository.formdata import receive_files
from pair.repository.models import QuarantineItem
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
    note: str = ""


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
    if status not in ("pending", "released", "deleted", "all"):
        raise BadRequest("status must be pending, released, deleted or all.")
    items = service.list_quarantine(session, actor.facility_id or 0, status)
    record(session, actor, "quarantine.list", "quarantine_item", "", detail={"n": len(items)})
    return [QuarantineOut.model_validate(i, from_attributes=True) for i in items]


def _own_item(session: Session, item_id: int, actor: Actor) -> QuarantineItem:
    item = session.get(QuarantineItem, item_id)
    if item is None or item.facility_id != actor.facility_id:
        raise NotFound(f"No quarantine item {item_id} in your facility.")
    return item


@router.post("/quarantine/{item_id}/release", status_code=204)
def release(
    item_id: int,
    body: ReviewIn,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> None:
    _own_item(session, item_id, actor)
    ingest.release_quarantined(node, item_id, actor, body.note)


@router.delete("/quarantine/{item_id}", status_code=204)
def delete(
    item_id: int,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> None:
    _own_item(session, item_id, actor)
    ingest.delete_quarantined(node, item_id, actor)
