"""``/api/registry``: counts, drill-down, exports, DICOM zip, dashboard data and data quality.

Cohort criteria come as query-string terms (``site=HOSPA&clinical.sex=Female``, the same terms
as the pages and ``pair registry --where``) or, for counts, as a JSON ``CohortQuery`` body.
Who may call what is decided by ``pair.accounts.policy`` (``REGISTRY_*`` actions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.core.errors import Invalid
from pair.core.node import Node
from pair.registry import service
from pair.registry.cohort import CohortQuery, from_terms, validate_query
from pair.registry.dashboard import dashboard
from pair.registry.export import FORMATS, KINDS, dicom_zip, export_cohort
from pair.registry.quality import quality_report
from pair.web.deps import SessionDep, get_node, own_facility

router = APIRouter(prefix="/api/registry", tags=["registry"])
PAGING = ("limit", "offset")


def query_of(request: Request) -> CohortQuery:
    """The cohort named by the request's query string (paging parameters aside)."""
    return from_terms(request.query_params.multi_items(), ignore=PAGING)


def export_dir(node: Node) -> Path:
    return node.settings.tmp_dir / "registry-exports"


def split_export_name(filename: str) -> tuple[str, str]:
    kind, dot, fmt = filename.partition(".")
    if not dot or kind not in KINDS or fmt not in FORMATS:
        names = [f"{k}.{f}" for k in KINDS for f in FORMATS]
        raise Invalid(f"Unknown export {filename!r}; use one of: {', '.join(names)}.")
    return kind, fmt


@router.get("/cohort")
def count_cohort(
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.REGISTRY_VIEW)),
) -> dict[str, Any]:
    """Counts first: total studies and patients, by site, modality and report category."""
    return service.cohort_counts(session, actor, query_of(request)).to_dict()


@router.post("/cohort")
def count_cohort_json(
    body: dict[str, Any] = Body(default_factory=dict),
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.REGISTRY_VIEW)),
) -> dict[str, Any]:
    """Counts for a JSON ``CohortQuery`` (unknown fields, codes and categories: 422)."""
    return service.cohort_counts(session, actor, validate_query(body)).to_dict()


@router.get("/cohort/studies")
def cohort_studies(
    request: Request,
    limit: int = 50,
    offset: int = 0,
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.REGISTRY_QUERY)),
) -> dict[str, Any]:
    """The drill-down: one page of studies (pseudonym, site, date, modality, categories)."""
    page = service.cohort_studies(session, actor, query_of(request), limit=limit, offset=offset)
    return vars(page)


@router.get("/exports/{filename}")
def export_file(
    filename: str,
    request: Request,
    session: Session = SessionDep,
    node: Node = Depends(get_node),
    actor: Actor = Depends(own_facility(Action.REGISTRY_QUERY)),
) -> FileResponse:
    """``studies.csv``, ``studies.parquet``, ``manifest.csv`` or ``manifest.parquet``."""
    kind, fmt = split_export_name(filename)
    out = export_cohort(session, actor, query_of(request), kind, fmt, export_dir(node))
    return FileResponse(
        out.path,
        media_type=out.media_type,
        filename=out.filename,
        background=BackgroundTask(out.path.unlink, missing_ok=True),
    )


@router.get("/dicom.zip")
def dicom_download(
    request: Request,
    session: Session = SessionDep,
    node: Node = Depends(get_node),
    actor: Actor = Depends(own_facility(Action.REGISTRY_DICOM)),
) -> StreamingResponse:
    """The cohort's de-identified DICOM files, streamed (approved users only)."""
    z = dicom_zip(
        session,
        actor,
        query_of(request),
        node.settings.storage_dir,
        node.settings.registry_max_zip_files,
    )
    return StreamingResponse(
        z.stream(),
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="registry-dicom.zip"'},
    )


@router.get("/dashboard")
def dashboard_data(
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.REGISTRY_VIEW)),
) -> dict[str, Any]:
    return dashboard(session, actor, query_of(request)).to_dict()


@router.get("/quality")
def quality(
    session: Session = SessionDep,
    node: Node = Depends(get_node),
    actor: Actor = Depends(own_facility(Action.REGISTRY_QUALITY)),
) -> dict[str, Any]:
    """Per-site data quality (every site; a facility admin/data manager: its own)."""
    sites = quality_report(session, actor, node.settings.registry_late_days)
    return {"sites": [s.to_dict() for s in sites]}
