"""Portal pages of the performance registry: the algorithms list and one page per algorithm
(forest plot with the pooled diamond and I², each site's drift chart with the threshold line,
alerts). What a reader sees follows ``pair.registry.performance.service``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.core.node import Node
from pair.registry.performance import figures, service
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, get_node, page_may
from pair.web.templating import register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
register_nav(
    "AI performance",
    "/registry/performance",
    roles=(Role.EVALUATOR.value, Role.REGISTRY_ANALYST.value, Role.HUB_OPERATOR.value),
    order=42,
)
reader = page_may(Action.PERF_READ)


@router.get("/registry/performance")
def algorithms(
    request: Request, session: Session = SessionDep, actor: Actor = Depends(reader)
) -> Response:
    items = service.list_algorithms(session, actor)
    alerts = service.list_alerts(session, actor, 50)
    names = service.facility_names(session)
    return render(
        request,
        "performance/list.html",
        {"items": items, "alerts": alerts, "names": names},
    )


@router.get("/registry/performance/{algorithm_id}")
def algorithm(
    algorithm_id: str,
    request: Request,
    session: Session = SessionDep,
    node: Node = Depends(get_node),
    actor: Actor = Depends(reader),
) -> Response:
    version = request.query_params.get("version") or None
    metric = request.query_params.get("metric") or None
    s = service.summary(session, node.settings, actor, algorithm_id, version, metric)
    charts = [(site, figures.drift(s, site)) for site in s.sites]
    return render(
        request,
        "performance/algorithm.html",
        {
            "s": s,
            "forest": figures.forest(s),
            "charts": charts,
            "names": service.facility_names(session),
        },
    )
