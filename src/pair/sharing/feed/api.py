"""Change feed routes: the feed, its SSE stream, hub cases (list, read, retract), webhook
subscriptions and their delivery log, and a site's webhook receiver (docs/hub-feed.md)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from pair.accounts.policy import Action, check_role
from pair.audit.service import Actor, record
from pair.core.errors import Forbidden, Invalid, NotFound, Unauthorized
from pair.core.node import Node
from pair.repository import retrieve
from pair.repository.multipart import new_boundary, stream_related
from pair.sharing.feed import events, follower, studies, webhooks
from pair.web.deps import SessionDep, commit_before_refusal, facility_member, get_node

router = APIRouter(tags=["hub feed"])


def reader(actor: Actor = Depends(facility_member)) -> Actor:
    check_role(actor, Action.FEED_READ)
    return actor


@router.get("/api/changes", summary="The change feed: events after a sequence number")
def list_changes(
    since: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=events.MAX_LIMIT),
    node: Node = Depends(get_node),
    session: Any = SessionDep,
    actor: Actor = Depends(reader),
) -> dict[str, Any]:
    found = events.events_after(session, since, limit, events.reader_scope(node.settings, actor))
    return {
        "facility": events.facility_code(session, actor.facility_id),
        "events": found,
        "last_seq": found[-1]["seq"] if found else since,
    }


def _resume_point(since: int | None, last_event_id: str | None) -> int:
    if last_event_id is not None and last_event_id.strip():
        value = last_event_id.strip()
        if not value.isdigit():
            raise Invalid("Last-Event-ID must be a sequence number (a non-negative integer).")
        return int(value)
    return since or 0


def _sse(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"))
    return f"id: {event['seq']}\nevent: {event['kind']}\ndata: {data}\n\n".encode()


async def _stream(
    request: Request, node: Node, start: int, scope: int | None, max_s: float
) -> AsyncIterator[bytes]:
    """Poll the database (any server process sees the same rows), send new events, and a
    comment line as heartbeat when idle; ends after ``max_s`` (clients reconnect)."""

    def read(after: int) -> list[dict[str, Any]]:
        with node.db.session() as session:
            return events.events_after(session, after, events.MAX_LIMIT, scope)

    settings = node.settings
    last, began = start, time.monotonic()
    quiet_since = began
    yield f"retry: {int(settings.feed_poll_s * 1000)}\n\n".encode()
    while time.monotonic() - began < max_s and not await request.is_disconnected():
        found = await run_in_threadpool(read, last)
        for event in found:
            yield _sse(event)
            last = event["seq"]
        if found:
            quiet_since = time.monotonic()
            continue
        if time.monotonic() - quiet_since >= settings.feed_heartbeat_s:
            yield b": heartbeat\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(min(settings.feed_poll_s, max(0.0, max_s - (time.monotonic() - began))))


@router.get("/api/changes/stream", summary="The change feed as Server-Sent Events")
def stream_changes(
    request: Request,
    since: int | None = Query(None, ge=0),
    max_s: float = Query(3600.0, gt=0, le=86400),
    last_event_id: str | None = Header(None),
    node: Node = Depends(get_node),
    session: Any = SessionDep,
    actor: Actor = Depends(reader),
) -> StreamingResponse:
    start = _resume_point(since, last_event_id)
    record(session, actor, "feed.stream", "feed", str(start))
    scope = events.reader_scope(node.settings, actor)
    return StreamingResponse(
        _stream(request, node, start, scope, max_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# ---- hub cases -------------------------------------------------------------------------------


@router.get("/api/hub/studies", summary="Hub cases of every member facility")
def hub_cases(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    origin: str = Query("", max_length=16, description="origin facility code"),
    modality: str = Query("", max_length=16),
    date_from: str = Query("", max_length=10, description="study date, YYYY-MM-DD"),
    date_to: str = Query("", max_length=10),
    node: Node = Depends(get_node),
    session: Any = SessionDep,
    actor: Actor = Depends(reader),
) -> dict[str, Any]:
    studies.require_hub(node)
    where = studies.CaseFilter.parse(origin, modality, date_from, date_to)
    found, total = studies.list_cases(session, limit, offset, where)
    return {"studies": found, "total": total, "limit": limit, "offset": offset}


@router.get("/api/hub/studies/{study_uid}", summary="A hub case's instances (WADO-RS style)")
def hub_study(
    study_uid: str,
    request: Request,
    node: Node = Depends(get_node),
    session: Any = SessionDep,
    actor: Actor = Depends(reader),
) -> Response:
    studies.require_hub(node)
    target_ts = retrieve.negotiate_dicom(request.headers.get("accept", ""))
    rows = studies.study_instances(session, study_uid)
    origin = studies.origin_of(session, study_uid)
    record(session, actor, "feed.retrieve", "study", study_uid, detail={"instances": len(rows)})
    boundary = new_boundary()
    parts = retrieve.iter_part10(node, rows, target_ts)
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return StreamingResponse(
        stream_related(parts, boundary),
        media_type=media,
        headers={follower.ORIGIN_HEADER: origin},
    )


@router.post("/api/hub/studies/{study_uid}/retract", summary="Retract one's own case")
def retract_case(
    study_uid: str,
    node: Node = Depends(get_node),
    session: Any = SessionDep,
    actor: Actor = Depends(facility_member),
) -> Response:
    try:
        check_role(actor, Action.FEED_RETRACT)
        studies.require_hub(node)
        removed, paths = studies.retract(session, actor, study_uid)
    except (Forbidden, NotFound):
        session.rollback()
        record(session, actor, "feed.retract", "study", study_uid, outcome="denied")
        commit_before_refusal(session)  # a refused retraction stays in the audit log
        raise
    body = json.dumps({"study_uid": study_uid, "instances_removed": removed})
    return Response(
        body,
        media_type="application/json",
        background=BackgroundTask(studies.delete_files, node, paths),
    )


@router.get("/api/hub/quota", summary="One's own facility's usage and quota at the hub")
def my_quota(
    node: Node = Depends(get_node),
    session: Any = SessionDep,
    actor: Actor = Depends(reader),
) -> dict[str, Any]:
    studies.require_hub(node)
    assert actor.facility_id is not None
    n, size = studies.usage(session, actor.facility_id)
    limit_n, limit_bytes = studies.quota_of(session, actor.facility_id)
    return {"instances": n, "bytes": size, "max_instances": limit_n, "max_bytes": limit_bytes}


# ---- webhooks --------------------------------------------------------------------------------


class WebhookIn(BaseModel):
    url: str
    # the subscriber's own secret (at least 32 characters); omitted: the hub makes one
    secret: str | None = None


@router.post("/api/feed/webhooks", status_code=201, summary="Subscribe a webhook")
def create_webhook(
    body: WebhookIn, session: Any = SessionDep, actor: Actor = Depends(facility_member)
) -> dict[str, Any]:
    check_role(actor, Action.FEED_WEBHOOK_MANAGE)
    hook, secret = webhooks.create(session, actor, body.url, body.secret)
    return {**webhooks.webhook_json(hook), "secret": secret}


@router.get("/api/feed/webhooks", summary="One's facility's webhooks")
def list_webhooks(
    session: Any = SessionDep, actor: Actor = Depends(facility_member)
) -> list[dict[str, Any]]:
    check_role(actor, Action.FEED_WEBHOOK_MANAGE)
    return [webhooks.webhook_json(h) for h in webhooks.list_for(session, actor)]


@router.delete("/api/feed/webhooks/{webhook_id}", status_code=204, summary="Unsubscribe")
def delete_webhook(
    webhook_id: int, session: Any = SessionDep, actor: Actor = Depends(facility_member)
) -> Response:
    check_role(actor, Action.FEED_WEBHOOK_MANAGE)
    webhooks.remove(session, actor, webhook_id)
    return Response(status_code=204)


@router.get("/api/feed/webhooks/{webhook_id}/deliveries", summary="A webhook's delivery log")
def webhook_deliveries(
    webhook_id: int,
    limit: int = Query(100, ge=1, le=1000),
    session: Any = SessionDep,
    actor: Actor = Depends(facility_member),
) -> list[dict[str, Any]]:
    check_role(actor, Action.FEED_WEBHOOK_LOG)
    return webhooks.deliveries(session, actor, webhook_id, limit)


@router.post("/api/feed/webhook", status_code=202, summary="Receive a hub's webhook (site)")
async def receive_webhook(
    request: Request, background: BackgroundTasks, node: Node = Depends(get_node)
) -> dict[str, Any]:
    """Authenticated by the HMAC signature (PAIR_FEED_WEBHOOK_SECRET), not a token. The event
    wakes the follower, which reads the feed from its cursor: nothing is missed or applied
    twice even when deliveries arrive late or repeated."""
    secret = node.settings.feed_webhook_secret.get_secret_value()
    if not secret:
        raise NotFound("This node receives no webhooks (PAIR_FEED_WEBHOOK_SECRET).")
    body = await request.body()
    timestamp = request.headers.get(webhooks.TIMESTAMP_HEADER, "")
    given = request.headers.get(webhooks.SIGNATURE_HEADER, "")
    if not webhooks.verify(secret, timestamp, body, given):
        raise Unauthorized("Bad or stale webhook signature.")
    background.add_task(follower.follow_quietly, node)
    return {"accepted": request.headers.get(webhooks.SEQ_HEADER, "")}
