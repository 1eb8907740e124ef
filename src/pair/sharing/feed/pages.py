"""Portal pages of the hub feed: browse the hub's cases and pull chosen ones (``/hub/cases``),
and webhook delivery logs (``/hub/webhooks``): a facility's admin sees its own subscriptions,
a hub operator every facility's. Included by ``pair.sharing.pages``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.core.node import Node
from pair.sharing.feed import browse, studies, webhooks
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, get_node, page_may
from pair.web.sessions import redirect_with_flash
from pair.web.templating import register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
register_nav("Hub cases", "/hub/cases", roles=(Role.DATA_MANAGER.value,), order=61)
register_nav("Webhook deliveries", "/hub/webhooks", roles=(Role.HUB_OPERATOR.value,), order=86)
PAGE = 25


@router.get("/hub/cases")
def hub_cases_page(
    request: Request,
    origin: str = Query("", max_length=16),
    modality: str = Query("", max_length=16),
    date_from: str = Query("", max_length=10),
    date_to: str = Query("", max_length=10),
    offset: int = Query(0, ge=0),
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.FEED_READ)),
) -> Response:
    where = studies.CaseFilter.parse(origin, modality, date_from, date_to)
    found = browse.cases_page(node, session, actor, where, PAGE, offset)
    ctx: dict[str, Any] = {
        "page": found,
        "where": where,
        "form": {
            "origin": origin,
            "modality": modality,
            "date_from": date_from,
            "date_to": date_to,
        },
        "limit": PAGE,
        "offset": offset,
    }
    return render(request, "sharing/hub_cases.html", ctx)


@router.post("/hub/cases/pull")
def pull_form(
    study_uid: list[str] = Form([]),
    node: Node = Depends(get_node),
    actor: Actor = Depends(page_may(Action.FEED_PULL)),
) -> Response:
    result = browse.pull_selected(node, actor, study_uid)
    message = f"Pulled {result.pulled} case(s) from the hub ({result.instances} instance(s))."
    if result.gone:
        message += f" {len(result.gone)} case(s) are no longer at the hub."
    return redirect_with_flash("/hub/cases", message, "warning" if result.gone else "success")


@router.get("/hub/webhooks")
def webhooks_page(
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.FEED_WEBHOOK_LOG)),
) -> Response:
    ctx = {"hooks": webhooks.logged_hooks(session, actor)}
    return render(request, "sharing/webhooks.html", ctx)


@router.get("/hub/webhooks/{webhook_id}")
def webhook_log_page(
    request: Request,
    webhook_id: int,
    offset: int = Query(0, ge=0),
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.FEED_WEBHOOK_LOG)),
) -> Response:
    rows = webhooks.deliveries(session, actor, webhook_id, PAGE + 1, offset)
    hook = webhooks.logged_hooks(session, actor, webhook_id)[0]
    ctx = {
        "hook": hook,
        "rows": rows[:PAGE],
        "more": len(rows) > PAGE,
        "offset": offset,
        "limit": PAGE,
    }
    return render(request, "sharing/webhook_log.html", ctx)
