"""Browse the hub's cases and pull chosen ones (``/hub/cases``, docs/hub-feed.md).

At a site (``PAIR_HUB_URL`` and ``PAIR_HUB_TOKEN`` set) the list comes from the hub's
``GET /api/hub/studies`` with the site's credential, and a chosen case is pulled with the same
code the follower uses (``follower.pull``: origin kept in ``feed_origin``, the local copy never
shared back). Pulled cases go into the site's feed facility (``PAIR_FEED_FACILITY``), so only
that facility's users see the page; its admins and data managers may pull. At the hub the page
lists the hub's own cases (every member reads them), without pulling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.policy import Action, authorize, check_role, may
from pair.audit.service import Actor
from pair.core.errors import Invalid, NotFound
from pair.core.node import Node
from pair.sharing.feed import follower, studies
from pair.sharing.feed.models import FeedOrigin

MAX_PULL = 50  # cases per "Pull selected"
_NO_HUB = "This node follows no hub (set PAIR_HUB_URL and PAIR_HUB_TOKEN)."
_ELSEWHERE = "Hub cases are pulled into another facility of this node (PAIR_FEED_FACILITY)."


@dataclass
class CasesPage:
    at_hub: bool
    cases: list[dict[str, Any]]
    total: int
    may_pull: bool
    hub_url: str = ""


def _feed_facility(node: Node, session: Session, actor: Actor, action: Action) -> int:
    """The site's facility that receives hub cases; another facility's user gets 404."""
    if not node.settings.hub_url or not node.settings.hub_token.get_secret_value():
        raise NotFound(_NO_HUB)
    facility_id = follower.local_facility(session, node.settings.feed_facility).id
    authorize(actor, action, facility_id, missing=_ELSEWHERE)
    return facility_id


def cases_page(
    node: Node,
    session: Session,
    actor: Actor,
    where: studies.CaseFilter,
    limit: int,
    offset: int,
) -> CasesPage:
    """One page of the hub's cases with origin attribution; at a site, each row says whether
    (and as which local study) it was pulled already."""
    check_role(actor, Action.FEED_READ)
    if node.settings.role == "hub":
        found, total = studies.list_cases(session, limit, offset, where)
        return CasesPage(True, found, total, False)
    facility_id = _feed_facility(node, session, actor, Action.FEED_READ)
    hub = follower.HubClient(node)
    try:
        data = hub.cases(where, limit, offset)
    finally:
        hub.close()
    found = list(data.get("studies", []))
    uids = [str(c.get("study_uid", "")) for c in found]
    pulled = dict(
        session.execute(
            select(FeedOrigin.hub_study_uid, FeedOrigin.local_study_uid).where(
                FeedOrigin.hub_study_uid.in_(uids), FeedOrigin.facility_id == facility_id
            )
        ).all()
    )
    for case in found:
        case["local_study_uid"] = pulled.get(str(case.get("study_uid", "")), "")
    may_pull = may(actor, Action.FEED_PULL, facility_id)
    return CasesPage(False, found, int(data.get("total", 0)), may_pull, hub.url)


@dataclass
class PullResult:
    pulled: int = 0
    instances: int = 0
    gone: list[str] = field(default_factory=list)


def pull_selected(node: Node, actor: Actor, study_uids: list[str]) -> PullResult:
    """Pull the chosen hub cases into the site's feed facility (audited as the user)."""
    check_role(actor, Action.FEED_PULL)
    if node.settings.role == "hub":
        raise Invalid("The hub holds these cases already; pull them at a member site.")
    chosen = list(dict.fromkeys(u.strip() for u in study_uids if u.strip()))
    if not chosen:
        raise Invalid("Choose at least one case to pull.")
    if len(chosen) > MAX_PULL:
        raise Invalid(f"Pull at most {MAX_PULL} cases at a time.")
    if any(len(u) > 64 or not all(c.isdigit() or c == "." for c in u) for u in chosen):
        raise Invalid("A study UID has digits and dots only (at most 64 characters).")
    with node.db.session() as session:
        _feed_facility(node, session, actor, Action.FEED_PULL)
    result = PullResult()
    hub = follower.HubClient(node)
    try:
        for uid in chosen:
            try:
                result.instances += follower.pull(node, hub, uid, by=actor)
                result.pulled += 1
            except NotFound:  # retracted meanwhile
                result.gone.append(uid)
    finally:
        hub.close()
    return result
