"""Use-case API (``/api/usecases``): any signed-in user reads, drafts, submits and comments;
the author revises; only the panel role publishes and retires (``Action.USECASE_PUBLISH``).
Node-wide documents: no facility scope."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session

from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.usecases import export, service
from pair.usecases.models import UseCaseVersion
from pair.usecases.spec import schema
from pair.web.deps import SessionDep, current_actor, own_facility

router = APIRouter(prefix="/api/usecases", tags=["usecases"])
panel = own_facility(Action.USECASE_PUBLISH)
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": schema()}}}}


def _out(row: UseCaseVersion, full: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.usecase_id,
        "version": row.version,
        "title": row.title,
        "status": row.status,
        "author": row.author,
        "created_at": row.created_at.isoformat(),
    }
    if full:
        out["document"] = row.document
    return out


@router.get("/schema")
def get_schema(actor: Actor = Depends(current_actor)) -> dict[str, Any]:
    """The JSON Schema a use case follows (Define-AI sections + evaluation plan)."""
    return schema()


@router.get("")
def list_usecases(
    q: str | None = Query(None, description="Matches id and title"),
    status: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> dict[str, Any]:
    service.ensure_shipped(session)
    result = service.list_usecases(session, q, status, limit, offset)
    return {"total": result.total, "items": [_out(r, full=False) for r in result.items]}


@router.post("", status_code=201, openapi_extra=_BODY)
def create(
    body: Any = Body(...), session: Session = SessionDep, actor: Actor = Depends(current_actor)
) -> dict[str, Any]:
    """A new draft (version 1); 422 lists every schema or CDE problem by path."""
    row = service.create_draft(session, actor, body)
    return _out(row)


@router.get("/{usecase_id}")
def get_one(
    usecase_id: str,
    version: int | None = Query(None, ge=1),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> dict[str, Any]:
    row = service.get(session, usecase_id, version)
    out = _out(row)
    out["versions"] = [_out(v, full=False) for v in service.versions(session, usecase_id)]
    out["comments"] = [
        {"version": v, "author": c.author, "text": c.text, "created_at": c.created_at.isoformat()}
        for v, c in service.comments(session, usecase_id)
    ]
    return out


@router.put("/{usecase_id}", openapi_extra=_BODY)
def revise(
    usecase_id: str,
    body: Any = Body(...),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> dict[str, Any]:
    """The author's revision: a new version; the previous one is kept (superseded)."""
    row = service.revise(session, actor, usecase_id, body)
    return _out(row)


@router.post("/{usecase_id}/submit")
def submit(
    usecase_id: str, session: Session = SessionDep, actor: Actor = Depends(current_actor)
) -> dict[str, Any]:
    row = service.submit(session, actor, usecase_id)
    return _out(row, full=False)


@router.post("/{usecase_id}/comments", status_code=201)
def comment(
    usecase_id: str,
    text: str = Body(..., embed=True, max_length=service.MAX_COMMENT),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> dict[str, Any]:
    c = service.comment(session, actor, usecase_id, text)
    return {"id": c.id, "author": c.author, "text": c.text}


@router.post("/{usecase_id}/publish")
def publish(
    usecase_id: str, session: Session = SessionDep, actor: Actor = Depends(panel)
) -> dict[str, Any]:
    row = service.publish(session, actor, usecase_id)
    return _out(row, full=False)


@router.post("/{usecase_id}/retire")
def retire(
    usecase_id: str, session: Session = SessionDep, actor: Actor = Depends(panel)
) -> dict[str, Any]:
    row = service.retire(session, actor, usecase_id)
    return _out(row, full=False)


@router.get("/{usecase_id}/export.json")
def export_json(
    usecase_id: str,
    version: int | None = Query(None, ge=1),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> dict[str, Any]:
    return service.get(session, usecase_id, version).document


@router.get("/{usecase_id}/export.md", response_class=PlainTextResponse)
def export_markdown(
    usecase_id: str,
    version: int | None = Query(None, ge=1),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> str:
    row = service.get(session, usecase_id, version)
    return export.markdown(row.document, row.status)


@router.get("/{usecase_id}/diff")
def diff(
    usecase_id: str,
    a: int = Query(..., ge=1, alias="from"),
    b: int = Query(..., ge=1, alias="to"),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> dict[str, Any]:
    old = service.get(session, usecase_id, a)
    new = service.get(session, usecase_id, b)
    return {"from": a, "to": b, "changes": export.diff(old.document, new.document)}
