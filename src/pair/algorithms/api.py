"""Algorithm repository API: submit packages (evaluator/admin), list and inspect (any user)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.algorithms import service
from pair.algorithms.models import Algorithm
from pair.audit.service import Actor
from pair.core.errors import BadRequest, NotFound, PayloadTooLarge
from pair.core.node import Node
from pair.web.deps import SessionDep, current_actor, get_node, require_roles

router = APIRouter(prefix="/api/algorithms", tags=["algorithms"])
can_submit = require_roles(Role.EVALUATOR)


class AlgorithmOut(BaseModel):
    id: str
    version: str
    name: str
    vendor: str
    sha256: str
    status: str
    submitted_by: str
    facility_id: int | None
    created_at: datetime
    manifest: dict[str, Any]


class AlgorithmDetail(AlgorithmOut):
    model_card: str | None


class AlgorithmVersions(BaseModel):
    id: str
    latest: str
    versions: list[AlgorithmOut]


def _out(a: Algorithm) -> AlgorithmOut:
    return AlgorithmOut(
        id=a.algorithm_id,
        version=a.version,
        name=a.name,
        vendor=a.manifest.get("vendor", ""),
        sha256=a.sha256,
        status=a.status,
        submitted_by=a.submitted_by,
        facility_id=a.facility_id,
        created_at=a.created_at,
        manifest=a.manifest,
    )


@router.post(
    "",
    response_model=AlgorithmOut,
    status_code=201,
    responses={
        200: {"description": "Identical package already registered"},
        409: {"description": "Same id and version with different content"},
        413: {"description": "Package too large"},
        422: {"description": "Package refused; details.problems lists why"},
    },
)
def submit(
    request: Request,
    package: UploadFile,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(can_submit),
) -> Any:
    """Upload a package zip (multipart field ``package``).

    A plain ``def``: validation runs a smoke inference, so FastAPI runs it in its thread pool
    instead of blocking the event loop.
    """
    limit = node.settings.algorithms.max_package_bytes
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit + 64 * 1024:
        raise PayloadTooLarge(f"The upload is {declared} bytes; the limit is {limit} bytes.")
    chunks, size = [], 0
    while chunk := package.file.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The package is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    if size == 0:
        raise BadRequest("The uploaded package is empty; send a zip in the 'package' field.")
    sub = service.submit_algorithm(session, node, b"".join(chunks), actor)
    body = _out(sub.algorithm)
    if not sub.created:
        return JSONResponse(body.model_dump(mode="json"), status_code=200)
    return body


@router.get("", response_model=list[AlgorithmOut])
def list_all(
    session: Session = SessionDep, _: Actor = Depends(current_actor)
) -> list[AlgorithmOut]:
    return [_out(a) for a in service.list_algorithms(session)]


@router.get("/{algorithm_id}", response_model=AlgorithmVersions)
def versions(
    algorithm_id: str,
    session: Session = SessionDep,
    _: Actor = Depends(current_actor),
) -> AlgorithmVersions:
    rows = service.list_algorithms(session, algorithm_id)
    if not rows:
        raise NotFound(f"No algorithm with id {algorithm_id!r}.")
    latest = service.get_algorithm(session, algorithm_id)
    return AlgorithmVersions(
        id=algorithm_id, latest=latest.version, versions=[_out(a) for a in rows]
    )


@router.get("/{algorithm_id}/{version}", response_model=AlgorithmDetail)
def one_version(
    algorithm_id: str,
    version: str,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    _: Actor = Depends(current_actor),
) -> AlgorithmDetail:
    """One version with its model card (README.md); ``latest`` selects the newest."""
    a = service.get_algorithm(session, algorithm_id, None if version == "latest" else version)
    return AlgorithmDetail(**_out(a).model_dump(), model_card=service.model_card(node, a))
