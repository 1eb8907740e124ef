"""Performance-registry API at the hub.

``POST /api/registry/feedback``: a member site's signed evaluation feedback (site-node bearer
token, HMAC over the canonical payload with the facility's secret); 201 when stored, 200 when
the same feedback id with the same content was stored before. Reading
(``/api/registry/performance/...``): registry analysts and hub operators see every site,
a facility's evaluators and admins their own (``pair.registry.performance.service``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.core.errors import PayloadTooLarge, UnsupportedMediaType
from pair.core.node import Node
from pair.registry.performance import receive, service
from pair.registry.performance.models import PerfAlert
from pair.web.deps import SessionDep, get_node, own_facility

router = APIRouter(tags=["performance registry"])
MAX_FEEDBACK_BYTES = 1024 * 1024  # the largest site payload is a few tens of KiB
reader = own_facility(Action.PERF_READ)
site_node = own_facility(Action.PERF_FEEDBACK_SUBMIT)


async def _body(request: Request) -> bytes:
    """The request body, refused past MAX_FEEDBACK_BYTES while it is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FEEDBACK_BYTES:
        raise PayloadTooLarge(f"Feedback is limited to {MAX_FEEDBACK_BYTES} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FEEDBACK_BYTES:
            raise PayloadTooLarge(f"Feedback is limited to {MAX_FEEDBACK_BYTES} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/api/registry/feedback", status_code=201)
async def receive_feedback(
    request: Request,
    response: Response,
    session: Session = SessionDep,
    node: Node = Depends(get_node),
    actor: Actor = Depends(site_node),
) -> dict[str, Any]:
    """Store one signed feedback envelope of the caller's facility (idempotent on its id)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType("Send the feedback envelope as application/json.")
    raw = await _body(request)
    accepted = await run_in_threadpool(
        receive.accept,
        session,
        node.settings,
        actor,
        raw,
        request.headers.get("idempotency-key"),
    )
    row = accepted.feedback
    if not accepted.created:
        response.status_code = 200
    return {
        "feedback_id": row.feedback_id,
        "status": "stored" if accepted.created else "duplicate",
        "algorithm_id": row.algorithm_id,
        "algorithm_version": row.algorithm_version,
        "period": row.period,
        "metrics": sorted(m.metric for m in row.metrics),
    }


def alert_json(a: PerfAlert, names: dict[int, str] | None = None) -> dict[str, Any]:
    return {
        "algorithm_id": a.algorithm_id,
        "algorithm_version": a.algorithm_version,
        "site": (names or {}).get(a.facility_id),
        "metric": a.metric,
        "period": a.period,
        "kind": a.kind,
        "value": a.value,
        "threshold": a.threshold,
        "use_case": a.use_case,
        "message": a.message,
        "created_at": a.created_at.isoformat(),
    }


def summary_json(s: service.Summary, names: dict[int, str]) -> dict[str, Any]:
    return {
        "algorithm_id": s.algorithm_id,
        "algorithm_name": s.algorithm_name,
        "version": s.version,
        "versions": s.versions,
        "metric": s.metric,
        "metrics": s.metrics,
        "threshold": None if s.threshold is None else asdict(s.threshold),
        "all_sites": s.all_sites,
        "sites": [
            {
                "site": r.name,
                "code": r.code,
                "own": r.mine,
                "period": r.period,
                "value": r.value,
                "lower": r.lower,
                "upper": r.upper,
                "n": r.n,
                "pooled": r.pooled_in,
                "series": [asdict(p) for p in r.series],
            }
            for r in s.sites
        ],
        "other_sites": s.other_sites,
        "pooled": None if s.pooled is None else asdict(s.pooled),
        "pooled_note": s.pooled_note,
        "alerts": [alert_json(a, names) for a in s.alerts],
    }


@router.get("/api/registry/performance/algorithms")
def algorithms(session: Session = SessionDep, actor: Actor = Depends(reader)) -> dict[str, Any]:
    return {"items": service.list_algorithms(session, actor)}


@router.get("/api/registry/performance/algorithms/{algorithm_id}")
def algorithm(
    algorithm_id: str,
    version: str | None = Query(None, max_length=100),
    metric: str | None = Query(None, max_length=32),
    session: Session = SessionDep,
    node: Node = Depends(get_node),
    actor: Actor = Depends(reader),
) -> dict[str, Any]:
    """Per-site estimates, the pooled estimate with tau², Q and I², series and alerts."""
    s = service.summary(session, node.settings, actor, algorithm_id, version, metric)
    return summary_json(s, service.facility_names(session))


@router.get("/api/registry/performance/alerts")
def alerts(
    limit: int = Query(200, ge=1, le=1000),
    session: Session = SessionDep,
    actor: Actor = Depends(reader),
) -> dict[str, Any]:
    names = service.facility_names(session)
    return {"items": [alert_json(a, names) for a in service.list_alerts(session, actor, limit)]}
