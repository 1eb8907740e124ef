"""DICOMweb: QIDO-RS search, WADO-RS retrieve/metadata/frames/rendered, STOW-RS store.

Routes are thin: parse, call the repository services, shape the response.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.audit.service import Actor, record
from pair.core.errors import LimitExceeded, NotFound
from pair.core.node import Node
from pair.dicom.render import RenderOptions, render
from pair.repository import retrieve
from pair.repository.inflation import InflationBudget
from pair.repository.ingest import Payload, ingest_batch
from pair.repository.multipart import new_boundary, split_related, stream_related
from pair.repository.query import (
    QidoQuery,
    find_instances,
    find_series,
    find_studies,
    parse_query,
)
from pair.repository.responses import (
    DICOM_JSON,
    instance_json,
    series_json,
    stow_response,
    study_json,
)
from pair.web.deps import SessionDep, current_actor, get_node, require_roles
from pair.web.urls import public_base_url

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
stow_roles = require_roles(Role.DATA_MANAGER, Role.SITE_NODE)  # a member site pushes to its hub


def _base(request: Request) -> str:
    return public_base_url(request) + "/dicomweb"


def _json(items: list[dict[str, Any]], q: QidoQuery) -> Response:
    warnings = []
    if q.more and q.capped:  # PS3.18 §8.3.4.4: the server's limit cut the answer short
        warnings.append(
            '299 PAIR "The number of results exceeded the maximum supported by the server. '
            'Additional results can be requested."'
        )
    ignored, fuzzy = q.ignored, q.fuzzy
    if ignored:
        names = ", ".join(sorted(set(ignored)))
        warnings.append(f'299 PAIR "Matching on {names} is not supported and was ignored"')
    if fuzzy:  # PS3.18 §8.3.4.5: an origin server without fuzzy matching says so
        warnings.append(
            '299 PAIR "The fuzzymatching parameter is not supported. '
            'Only literal matching has been performed."'
        )
    headers = {"Warning": ", ".join(warnings)} if warnings else {}
    if not items:
        return Response(status_code=204, headers=headers)
    return _dicom_json(items, headers=headers)


def _dicom_json(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """orjson: a 100-study QIDO-RS answer encodes in ~0.1 ms instead of ~1 ms with json.dumps."""
    return Response(
        orjson.dumps(content), status_code=status_code, media_type=DICOM_JSON, headers=headers
    )


def _audit(session: Session, actor: Actor, action: str, obj: str, **detail: Any) -> None:
    record(session, actor, action, "study", obj, detail=detail)


# ---- QIDO-RS ---------------------------------------------------------------------------------


@router.get("/studies", summary="QIDO-RS: search studies")
def search_studies(
    request: Request,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> Response:
    q = parse_query(list(request.query_params.multi_items()))
    studies = find_studies(session, _facility(actor), q)
    base = _base(request)
    items = [study_json(node, session, s, q, base) for s in studies]
    _audit(session, actor, "qido.studies", "", results=len(items))
    return _json(items, q)


@router.get("/series", summary="QIDO-RS: search all series")
@router.get("/studies/{study}/series", summary="QIDO-RS: search a study's series")
def search_series(
    request: Request,
    study: str | None = None,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> Response:
    q = parse_query(list(request.query_params.multi_items()))
    rows = find_series(session, _facility(actor), q, study)
    base = _base(request)
    items = [
        series_json(node, session, se, st, q, base, with_study=study is None) for se, st in rows
    ]
    _audit(session, actor, "qido.series", study or "", results=len(items))
    return _json(items, q)


@router.get("/instances", summary="QIDO-RS: search all instances")
@router.get("/studies/{study}/instances", summary="QIDO-RS: search a study's instances")
@router.get(
    "/studies/{study}/series/{series}/instances", summary="QIDO-RS: search a series' instances"
)
def search_instances(
    request: Request,
    study: str | None = None,
    series: str | None = None,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> Response:
    q = parse_query(list(request.query_params.multi_items()))
    rows = find_instances(session, _facility(actor), q, study, series)
    base = _base(request)
    items = [
        instance_json(
            node, session, i, se, st, q, base, with_series=series is None, with_study=study is None
        )
        for i, se, st in rows
    ]
    _audit(session, actor, "qido.instances", study or "", results=len(items))
    return _json(items, q)


# ---- WADO-RS ---------------------------------------------------------------------------------


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study")
@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
@router.get(
    "/studies/{study}/series/{series}/instances/{instance}", summary="WADO-RS: retrieve an instance"
)
def retrieve_instances(
    request: Request,
    study: str,
    series: str | None = None,
    instance: str | None = None,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> Response:
    target_ts = retrieve.negotiate_dicom(request.headers.get("accept", ""))
    rows = retrieve.require_instances(session, _facility(actor), study, series, instance)
    _audit(session, actor, "wado.retrieve", study, instances=len(rows))
    boundary = new_boundary()
    parts = retrieve.iter_part10(node, rows, target_ts)
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return StreamingResponse(stream_related(parts, boundary), media_type=media)


@router.get("/studies/{study}/metadata", summary="WADO-RS: study metadata")
@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: series metadata")
@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    summary="WADO-RS: instance metadata",
)
def retrieve_metadata(
    request: Request,
    study: str,
    series: str | None = None,
    instance: str | None = None,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> Response:
    rows = retrieve.require_instances(session, _facility(actor), study, series, instance)
    _audit(session, actor, "wado.metadata", study, instances=len(rows))
    return _dicom_json(retrieve.metadata(node, rows, _base(request)))


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
    summary="WADO-RS: bulk data referenced from metadata",
)
def retrieve_bulkdata(
    study: str,
    series: str,
    instance: str,
    tag: str,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> Response:
    row = retrieve.require_instances(session, _facility(actor), study, series, instance)[0]
    _audit(session, actor, "wado.bulkdata", study)
    boundary = new_boundary()
    parts = [(retrieve.bulkdata(node, row, tag), "application/octet-stream")]
    media = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
    return StreamingResponse(stream_related(parts, boundary), media_type=media)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    summary="WADO-RS: retrieve frames",
)
def retrieve_frames(
    request: Request,
    study: str,
    series: str,
    instance: str,
    frames: str,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> Response:
    numbers = retrieve.parse_frame_list(frames)
    row = retrieve.require_instances(session, _facility(actor), study, series, instance)[0]
    _audit(session, actor, "wado.frames", study, frames=len(numbers))
    boundary = new_boundary()
    parts = retrieve.frames(node, row, numbers, request.headers.get("accept", ""))
    part_type, _, syntax = parts[0][1].partition("; ")
    media = f'multipart/related; type="{part_type}"; {syntax + "; " if syntax else ""}'
    media += f"boundary={boundary}"
    return StreamingResponse(stream_related(parts, boundary), media_type=media)


def _accept(request: Request, accept: str | None) -> str:
    """PS3.18 8.3.3.1: an ``accept`` query parameter takes precedence over the header."""
    return accept if accept else request.headers.get("accept", "")


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/rendered",
    summary="WADO-RS: rendered instance (first frame)",
)
@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
    summary="WADO-RS: rendered frame",
)
def retrieve_rendered(
    request: Request,
    study: str,
    series: str,
    instance: str,
    frame: int = 1,
    window: str | None = None,
    viewport: str | None = None,
    quality: int | None = None,
    accept: str | None = None,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> Response:
    opts = RenderOptions.from_query(_accept(request, accept), window, viewport, quality)
    row = retrieve.require_instances(session, _facility(actor), study, series, instance)[0]
    _audit(session, actor, "wado.rendered", study)
    data = render(
        retrieve.read_dataset(node, row), frame, opts, node.settings.max_decoded_pixel_bytes
    )
    return Response(data, media_type=opts.media_type, headers={"Cache-Control": "private"})


@router.get("/studies/{study}/series/{series}/thumbnail", summary="Series thumbnail")
@router.get("/studies/{study}/thumbnail", summary="Study thumbnail")
@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
    summary="Instance thumbnail (PS3.18 10.4.1.1)",
)
@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/thumbnail",
    summary="Frame thumbnail (PS3.18 10.4.1.1)",
)
def retrieve_thumbnail(
    request: Request,
    study: str,
    series: str | None = None,
    instance: str | None = None,
    frame: int = 1,
    viewport: str | None = None,
    accept: str | None = None,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> Response:
    """A small rendering chosen by the node: the middle image of a study or series."""
    opts = RenderOptions.from_query(_accept(request, accept), None, viewport or "128,128", None)
    rows = retrieve.require_instances(session, _facility(actor), study, series, instance)
    renderable = [r for r in rows if r.rows]
    if not renderable:
        raise NotFound("No renderable instance in this study/series.")
    _audit(session, actor, "wado.thumbnail", study)
    ds = retrieve.read_dataset(node, renderable[len(renderable) // 2])
    data = render(ds, frame, opts, node.settings.max_decoded_pixel_bytes)
    return Response(data, media_type=opts.media_type, headers={"Cache-Control": "private"})


# ---- STOW-RS ---------------------------------------------------------------------------------


@router.post("/studies", summary="STOW-RS: store instances")
@router.post("/studies/{study}", summary="STOW-RS: store instances of one study")
async def store_instances(
    request: Request,
    study: str | None = None,
    node: Node = Depends(get_node),
    actor: Actor = Depends(stow_roles),
) -> Response:
    # the body is held in memory, capped at PAIR_MAX_UPLOAD_BYTES (413 past it, chunked too);
    # deflated parts are measured before any is ingested: 413 past the request's inflation limit
    body = await read_limited_body(request, node.settings.max_upload_bytes)
    parts = split_related(body, request.headers.get("content-type", ""), "application/dicom")
    del body
    labelled = [(str(n), data) for n, (_, data) in enumerate(parts, 1)]
    sizes = await run_in_threadpool(InflationBudget.of(node.settings).measure, labelled)
    payloads = [
        Payload(data=data, label=label, inflated=size)
        for (label, data), size in zip(labelled, sizes, strict=True)
    ]
    results = await run_in_threadpool(
        ingest_batch,
        node,
        _facility(actor),
        payloads,
        f"stow:{actor.user_name}",
        actor,
        expected_study_uid=study,
    )
    status, content = stow_response(results, _base(request))
    return _dicom_json(content, status_code=status)


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) past ``limit`` bytes with or without a Content-Length."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise LimitExceeded(
            f"Request of {declared} bytes exceeds the limit of {limit} bytes "
            "(PAIR_MAX_UPLOAD_BYTES).",
            details={"limit": "max_upload_bytes", "bytes": limit},
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LimitExceeded(
                f"Request exceeds the limit of {limit} bytes (PAIR_MAX_UPLOAD_BYTES).",
                details={"limit": "max_upload_bytes", "bytes": limit},
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _facility(actor: Actor) -> int:
    if actor.facility_id is None:
        raise NotFound("This account belongs to no facility.")
    return actor.facility_id
