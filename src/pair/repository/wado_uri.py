"""WADO-URI (PS3.18 chapter 9): one object by its three UIDs, for older viewers.

``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..[&contentType=..]`` answers
the stored Part 10 file (``application/dicom``, optionally transcoded with ``transferSyntax``)
or a rendered frame (``image/jpeg`` or ``image/png``, with ``frameNumber``, ``rows``,
``columns``, ``windowCenter``/``windowWidth``, ``imageQuality``). It is the same resource as
WADO-RS, confined to the caller's facility and audited the same way. Parameters the node
cannot honour (``region``, ``presentationUID``, ``annotation``) are refused with a 400 that
says so rather than silently ignored, since they change what the viewer would show.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from pair.audit.service import Actor, record
from pair.core.errors import BadRequest, NotAcceptable, NotFound
from pair.core.node import Node
from pair.dicom.render import RenderOptions, render
from pair.repository import retrieve
from pair.web.deps import SessionDep, current_actor, get_node

router = APIRouter(tags=["dicomweb"])

IMAGE_TYPES = ("image/jpeg", "image/png")
UNSUPPORTED = ("region", "presentationUID", "presentationSeriesUID", "annotation")


def _content_type(asked: str | None, has_pixels: bool) -> str:
    """The first acceptable type of the list (9.1.2.1.5); default JPEG for images."""
    if not asked:
        return "image/jpeg" if has_pixels else "application/dicom"
    for item in asked.split(","):
        media = item.split(";")[0].strip().lower()
        if media == "application/dicom" or (media in IMAGE_TYPES and has_pixels):
            return media
        if media in ("*/*", "image/*") and has_pixels:
            return "image/jpeg"
    offered = "application/dicom" + (", image/jpeg, image/png" if has_pixels else "")
    raise NotAcceptable(
        f"contentType {asked!r} cannot be served; this object is offered as {offered}."
    )


@router.get("/wado", summary="WADO-URI: retrieve one object (PS3.18 chapter 9)")
def wado_uri(
    request_type: str = Query(..., alias="requestType"),
    study_uid: str = Query(..., alias="studyUID"),
    series_uid: str = Query(..., alias="seriesUID"),
    object_uid: str = Query(..., alias="objectUID"),
    content_type: str | None = Query(None, alias="contentType"),
    transfer_syntax: str | None = Query(None, alias="transferSyntax"),
    frame_number: int = Query(1, alias="frameNumber", ge=1),
    rows: int | None = Query(None, ge=1, le=4096),
    columns: int | None = Query(None, ge=1, le=4096),
    window_center: float | None = Query(None, alias="windowCenter"),
    window_width: float | None = Query(None, alias="windowWidth"),
    image_quality: int | None = Query(None, alias="imageQuality", ge=1, le=100),
    anonymize: str | None = None,
    region: str | None = None,
    presentation_uid: str | None = Query(None, alias="presentationUID"),
    presentation_series_uid: str | None = Query(None, alias="presentationSeriesUID"),
    annotation: str | None = None,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> Response:
    if request_type != "WADO":
        raise BadRequest("requestType must be WADO.")
    asked = [
        name
        for name, value in zip(
            UNSUPPORTED,
            (region, presentation_uid, presentation_series_uid, annotation),
            strict=True,
        )
        if value is not None
    ]
    if asked:
        raise BadRequest(f"WADO-URI parameter(s) {', '.join(asked)} are not supported by PAIR.")
    if actor.facility_id is None:
        raise NotFound("This account belongs to no facility.")
    row = retrieve.require_instances(session, actor.facility_id, study_uid, series_uid, object_uid)[
        0
    ]
    media = _content_type(content_type, bool(row.rows))
    record(session, actor, "wado.uri", "study", study_uid, detail={"content_type": media})
    if media == "application/dicom":
        # anonymize=yes: what the node stores is already de-identified (PS3.15 profile at ingest)
        if anonymize not in (None, "yes"):
            raise BadRequest("anonymize must be 'yes' when given.")
        target = (
            None if transfer_syntax in (None, "*", row.transfer_syntax_uid) else transfer_syntax
        )
        data, _ = next(iter(retrieve.iter_part10(node, [row], target)))
        return Response(data, media_type="application/dicom", headers={"Cache-Control": "private"})
    if transfer_syntax is not None or anonymize is not None:
        raise BadRequest(
            "transferSyntax and anonymize apply to contentType=application/dicom only."
        )
    if (window_center is None) != (window_width is None):
        raise BadRequest("windowCenter and windowWidth must be given together.")
    window = None if window_center is None else f"{window_center},{window_width}"
    viewport = None
    if rows or columns:
        viewport = f"{columns or rows},{rows or columns}"
    opts = RenderOptions.from_query(media, window, viewport, image_quality)
    data = render(
        retrieve.read_dataset(node, row), frame_number, opts, node.settings.max_decoded_pixel_bytes
    )
    return Response(data, media_type=opts.media_type, headers={"Cache-Control": "private"})
