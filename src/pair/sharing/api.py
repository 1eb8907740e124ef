"""Sharing API: hub membership and the hub's JSON receivers (``/api/hub/...``, a hub only), and
a site facility's sharing policy, outbox status and "share this case" (``/api/sharing``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.core.errors import NotFound
from pair.core.node import Node
from pair.sharing import membership, outbox, receive
from pair.web.deps import SessionDep, get_node, own_facility

router = APIRouter(tags=["sharing"])


def require_hub(node: Node) -> None:
    """Hub routes exist on every node but answer only on one started with ``--role hub``."""
    if node.settings.role != "hub":
        raise NotFound("This node is not a hub.")


class RegistrationIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    code: str = Field(min_length=1, max_length=12)
    contact: str = Field(default="", max_length=256)
    site_url: str = Field(default="", max_length=256)


class ClinicalIn(BaseModel):
    idempotency_key: str = Field(min_length=1, max_length=64)
    study_uids: list[str] = Field(min_length=1, max_length=100)
    data: dict[str, Any]
    dictionary_version: str = ""


class ReportIn(BaseModel):
    idempotency_key: str = Field(min_length=1, max_length=64)
    study_uid: str = Field(min_length=1, max_length=64)
    module_id: str = Field(min_length=1, max_length=64)
    module_version: str = Field(default="", max_length=16)
    version: int = Field(ge=1)
    status: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    text: str = Field(default="", max_length=200_000)
    signed_at: str | None = None
    amend_reason: str = Field(default="", max_length=10_000)
    sr_sop_instance_uid: str = Field(default="", max_length=64)


class PolicyIn(BaseModel):
    mode: str


@router.post("/api/hub/registrations", status_code=201, summary="Ask to join this hub")
def register(
    body: RegistrationIn, node: Node = Depends(get_node), session: Session = SessionDep
) -> dict[str, object]:
    require_hub(node)
    member = membership.register(session, body.name, body.code, body.contact, body.site_url)
    return {"id": member.id, "code": member.code, "status": member.status}


@router.get("/api/hub/members", summary="Member registrations (hub operator)")
def list_members(
    node: Node = Depends(get_node),
    actor: Actor = Depends(own_facility(Action.HUB_MEMBER_MANAGE)),
    session: Session = SessionDep,
) -> list[dict[str, object]]:
    require_hub(node)
    return [membership.member_json(m) for m in membership.list_members(session, actor)]


@router.post("/api/hub/members/{member_id}/{decision}", summary="Approve, reject, revoke, reissue")
def decide(
    member_id: int,
    decision: str,
    node: Node = Depends(get_node),
    actor: Actor = Depends(own_facility(Action.HUB_MEMBER_MANAGE)),
    session: Session = SessionDep,
) -> dict[str, object]:
    require_hub(node)
    return decide_member(session, actor, member_id, decision)


def decide_member(session: Session, actor: Actor, member_id: int, decision: str) -> dict[str, Any]:
    """One decision; approve and reissue return the credential (shown this once)."""
    if decision in ("approve", "reissue"):
        do = membership.approve if decision == "approve" else membership.reissue
        cred = do(session, actor, member_id)
        return {
            "member": membership.member_json(cred.member),
            "user": cred.user_name,
            "token": cred.token,
        }
    if decision == "reject":
        return {"member": membership.member_json(membership.reject(session, actor, member_id))}
    if decision == "revoke":
        return {"member": membership.member_json(membership.revoke(session, actor, member_id))}
    raise NotFound(f"No decision {decision!r}: approve, reject, revoke or reissue.")


@router.post("/api/hub/clinical", summary="A member site's clinical record of one case")
def hub_clinical(
    body: ClinicalIn,
    node: Node = Depends(get_node),
    actor: Actor = Depends(own_facility(Action.HUB_PUSH)),
    session: Session = SessionDep,
) -> dict[str, Any]:
    require_hub(node)
    return receive.receive_clinical(
        session, actor, body.idempotency_key, body.study_uids, body.data
    )


@router.post("/api/hub/reports", summary="A member site's final report version")
def hub_report(
    body: ReportIn,
    node: Node = Depends(get_node),
    actor: Actor = Depends(own_facility(Action.HUB_PUSH)),
    session: Session = SessionDep,
) -> dict[str, Any]:
    require_hub(node)
    return receive.receive_report(session, actor, body.idempotency_key, body.model_dump())


@router.get("/api/sharing", summary="Sharing policy, outbox counts and latest items")
def sharing_status(
    request: Request,
    actor: Actor = Depends(own_facility(Action.SHARING_STATUS)),
    session: Session = SessionDep,
) -> dict[str, Any]:
    return outbox.sharing_status(session, actor).as_json()


@router.put("/api/sharing/policy", summary="Set the facility's sharing policy (admin)")
def set_policy(
    body: PolicyIn,
    actor: Actor = Depends(own_facility(Action.SHARING_POLICY_SET)),
    session: Session = SessionDep,
) -> dict[str, str]:
    return {"policy": outbox.set_policy(session, actor, body.mode)}


@router.post("/api/sharing/retry", summary="Queue the facility's failed items again (admin)")
def retry(
    actor: Actor = Depends(own_facility(Action.SHARING_POLICY_SET)),
    session: Session = SessionDep,
) -> dict[str, int]:
    return {"queued": outbox.retry_failed(session, actor)}


@router.post("/api/cases/{case_id}/share", summary="Share this case with the hub")
def share_case(
    case_id: int,
    actor: Actor = Depends(own_facility(Action.SHARING_CASE)),
    session: Session = SessionDep,
) -> dict[str, Any]:
    return {"queued": outbox.share_case(session, actor, case_id)}
