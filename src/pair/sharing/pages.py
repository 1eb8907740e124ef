"""Portal pages: a site's sharing policy and outbox (``/sharing``), "share this case", and the
hub operator's member list with approve / reject / revoke / reissue (``/hub/members``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from pair.accounts.models import Role
from pair.accounts.policy import Action, may
from pair.audit.service import Actor
from pair.core.node import Node
from pair.sharing import membership, outbox
from pair.sharing.api import decide_member, require_hub
from pair.sharing.feed.pages import router as feed_pages
from pair.sharing.models import MemberStatus
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, get_node, page_may
from pair.web.sessions import redirect_with_flash
from pair.web.templating import register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
register_nav("Sharing", "/sharing", roles=(Role.DATA_MANAGER.value,), order=60)
register_nav("Hub members", "/hub/members", roles=(Role.HUB_OPERATOR.value,), order=85)
router.include_router(feed_pages)  # /hub/cases, /hub/webhooks (pair.sharing.feed.pages)

ACTIONS = {
    MemberStatus.PENDING: ("approve", "reject"),
    MemberStatus.APPROVED: ("revoke", "reissue"),
    MemberStatus.REVOKED: ("reissue",),
    MemberStatus.REJECTED: (),
}


@router.get("/sharing")
def sharing_page(
    request: Request,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.SHARING_STATUS)),
) -> Response:
    ctx = {
        "status": outbox.sharing_status(session, actor),
        "modes": outbox.policy_modes()["modes"],
        "may_set": may(actor, Action.SHARING_POLICY_SET, actor.facility_id),
        "hub_url": node.settings.hub_url,
    }
    return render(request, "sharing/sharing.html", ctx)


@router.post("/sharing/policy")
def policy_form(
    mode: str = Form(""),
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.SHARING_POLICY_SET)),
) -> Response:
    outbox.set_policy(session, actor, mode)
    return redirect_with_flash("/sharing", f"Sharing policy set to {mode}.")


@router.post("/sharing/retry")
def retry_form(
    session: Session = SessionDep, actor: Actor = Depends(page_may(Action.SHARING_POLICY_SET))
) -> Response:
    n = outbox.retry_failed(session, actor)
    return redirect_with_flash("/sharing", f"{n} failed item(s) queued again.")


@router.post("/cases/{case_id}/share")
def share_case_form(
    case_id: int,
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.SHARING_CASE)),
) -> Response:
    added = outbox.share_case(session, actor, case_id)
    return redirect_with_flash(
        f"/cases/{case_id}", f"Case queued for the hub ({sum(added.values())} new item(s))."
    )


@router.get("/hub/members")
def members_page(
    request: Request,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.HUB_MEMBER_MANAGE)),
) -> Response:
    require_hub(node)
    ctx = {"members": membership.list_members(session, actor), "actions": ACTIONS}
    return render(request, "sharing/members.html", ctx)


@router.post("/hub/members/{member_id}/{decision}")
def member_decision(
    request: Request,
    member_id: int,
    decision: str,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(page_may(Action.HUB_MEMBER_MANAGE)),
) -> Response:
    """Approve and reissue show the new credential on the answer page, once (no redirect)."""
    require_hub(node)
    result = decide_member(session, actor, member_id, decision)
    if "token" not in result:
        return redirect_with_flash("/hub/members", f"Registration {member_id}: {decision} done.")
    ctx = {
        "members": membership.list_members(session, actor),
        "actions": ACTIONS,
        "credential": result,
    }
    return render(request, "sharing/members.html", ctx)
