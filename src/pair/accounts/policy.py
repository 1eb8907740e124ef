"""The one authorization policy: who may do what to which facility's objects.

Routes (``pair.web.deps``), pages and services all ask this module, so a check cannot be
forgotten in one entry point and present in another.

Threat model
------------
* **Other facilities** share the node. A facility's users, admins included, must never read,
  change or even learn of the existence of another facility's objects (patients, studies,
  reports, users, tokens, AE titles, de-identification profile and mapping, audit events). An
  object of another facility is answered exactly like a missing one (``NotFound``, 404), with
  the same message, so ids and names cannot be probed. A role that lacks an action in its own
  facility gets ``Forbidden`` (403): that reveals nothing about other facilities.
* **Facility users** get what their role needs in their own facility; only a facility admin
  manages that facility's accounts, tokens, AE titles, profile, quarantine and audit log. Every
  user may manage its own tokens and password.
* **The site admin** runs the node. In the application it is the explicit ``node-operator``
  role, granted only from the command line (``pair user create --role node-operator``; the API
  and portal refuse it). The operator administers every facility (facilities, accounts, AE
  titles, profiles, audit) but reads no clinical data, no re-identification mapping and no
  quarantined instance, and creates API tokens only for itself. Each of its actions is audited
  in the affected facility's log, so a facility sees what the operator did to it. Someone with
  shell access to the node is outside what an application can restrict; local commands act as
  the system actor (no user account), which passes every check.
* **Network peers** (DICOM AEs, HTTP clients without a token) are authenticated before this
  policy is asked; an AE title acts for the one facility it is registered to.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pair.accounts.models import Role
from pair.core.errors import Forbidden, NotFound

if TYPE_CHECKING:
    from pair.accounts.models import User
    from pair.audit.service import Actor


class Action(enum.StrEnum):
    FACILITY_LIST = "facility.list"
    FACILITY_CREATE = "facility.create"
    USER_LIST = "user.list"
    USER_CREATE = "user.create"
    USER_SET_ACTIVE = "user.set-active"
    USER_SET_PASSWORD = "user.set-password"
    TOKEN_LIST = "token.list"
    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    SESSION_MANAGE = "session.manage"
    AE_LIST = "ae.list"
    AE_ADD = "ae.add"
    AE_REMOVE = "ae.remove"
    DEID_PROFILE_READ = "deid.profile.read"
    DEID_PROFILE_WRITE = "deid.profile.write"
    DEID_MAPPING_EXPORT = "deid.mapping.export"
    DEID_BURNED_IN_REVIEW = "deid.burned-in.review"
    QUARANTINE_REVIEW = "quarantine.review"
    AUDIT_READ = "audit.read"
    USECASE_PUBLISH = "usecase.publish"
    # performance registry (pair.registry.performance, at the hub)
    PERF_FEEDBACK_SUBMIT = "perf.feedback.submit"
    PERF_READ = "perf.read"
    PERF_READ_ALL_SITES = "perf.read-all-sites"
    # ---- national registry at the hub (issue 13, pair.registry; roles in REGISTRY_ROLES) ----
    REGISTRY_VIEW = "registry.view"  # aggregated dashboards and cohort counts
    REGISTRY_QUERY = "registry.query"  # case-level drill-down, CSV/Parquet/UID-manifest exports
    REGISTRY_QUALITY = "registry.quality"  # data-quality report (own site, or every site)
    REGISTRY_DICOM = "registry.dicom"  # DICOM zip; also needs the hub operator's approval row
    REGISTRY_APPROVE = "registry.approve"  # approve/revoke DICOM download (hub operator, CLI)
    # ---- sharing / hub membership (pair.sharing, docs/hub.md) ----
    HUB_MEMBER_MANAGE = "hub.member.manage"  # hub operator: approve, revoke, reissue members
    HUB_PUSH = "hub.push"  # a member site's node account: push its facility's data to the hub
    SHARING_POLICY_SET = "sharing.policy.set"  # facility admin: what the facility shares
    SHARING_STATUS = "sharing.status"  # outbox progress and backlog of one's facility
    SHARING_CASE = "sharing.case"  # "share this case" on a case page
    # federated learning (issue 14): aggregate metrics of federated studies at the hub
    FEDERATED_READ = "federated.read"
    # ---- hub feed (docs/hub-feed.md) ----
    FEED_READ = "feed.read"  # the change feed, its stream, the hub's cases
    FEED_RETRACT = "feed.retract"  # withdraw one's own facility's case from the hub
    FEED_WEBHOOK_MANAGE = "feed.webhook.manage"  # a facility's webhook subscriptions
    FEED_PULL = "feed.pull"  # browse and pull chosen hub cases into one's (site's) facility
    FEED_WEBHOOK_LOG = "feed.webhook.log"  # delivery logs: own facility; every one (hub op.)
    # ---- end hub feed ----


# ---- sharing / hub membership: actions that belong to one role only (never to a facility
# admin or the node operator by default), and what other roles get besides admins ----
ROLE_ONLY_ACTIONS: dict[str, frozenset[Action]] = {
    Role.HUB_OPERATOR.value: frozenset({Action.HUB_MEMBER_MANAGE, Action.FEED_WEBHOOK_LOG}),
    Role.SITE_NODE.value: frozenset({Action.HUB_PUSH}),
}
# node-wide objects (membership registrations, every facility's webhook delivery log) decided
# by role, not by facility
NODE_WIDE_ROLE_ACTIONS = frozenset({Action.HUB_MEMBER_MANAGE, Action.FEED_WEBHOOK_LOG})
SHARING_MEMBER_ACTIONS: dict[str, frozenset[Action]] = {
    Role.DATA_MANAGER.value: frozenset({Action.SHARING_STATUS, Action.SHARING_CASE}),
}
_ROLE_ONLY = frozenset().union(*ROLE_ONLY_ACTIONS.values())


def _role_grants(actor: Actor, action: Action) -> bool:
    role = actor.role or ""
    return action in ROLE_ONLY_ACTIONS.get(role, frozenset()) or action in (
        SHARING_MEMBER_ACTIONS.get(role, frozenset())
    )


# Clinical decisions that belong to a role, not to administration: neither a facility admin nor
# the node operator may take them (publishing an AI use case is the thoracic panel's call).
PANEL_ACTIONS = frozenset({Action.USECASE_PUBLISH})
# ---- performance registry (AI performance registry at the hub) ----
# Decided by role alone, never by the admin/operator defaults below: a member site's service
# account (site-node) files its own facility's evaluation feedback; registry analysts and hub
# operators read every site's rows; a facility's evaluators and admins read their own site's
# rows and the pooled estimate but no other site's named rows (docs/performance-registry.md).
PERF_ACTIONS = frozenset(
    {Action.PERF_FEEDBACK_SUBMIT, Action.PERF_READ, Action.PERF_READ_ALL_SITES}
)
PERF_ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    Role.SITE_NODE.value: frozenset({Action.PERF_FEEDBACK_SUBMIT}),
    Role.REGISTRY_ANALYST.value: frozenset({Action.PERF_READ, Action.PERF_READ_ALL_SITES}),
    Role.HUB_OPERATOR.value: frozenset({Action.PERF_READ, Action.PERF_READ_ALL_SITES}),
    Role.EVALUATOR.value: frozenset({Action.PERF_READ}),
    Role.ADMIN.value: frozenset({Action.PERF_READ}),
}
# ---- national registry (issue 13): who reads the hub's registry. MIDRC-like: aggregated views
# for every registered data user of a member facility; case-level rows and exports for registry
# analysts and the hub operator; DICOM files only for approved analysts/researchers
# (``pair registry approve``). Facility admins and data managers see their own site's quality.
_FACILITY_DATA_ROLES = frozenset(
    {
        Role.ADMIN.value,
        Role.DATA_MANAGER.value,
        Role.RADIOLOGIST.value,
        Role.EVALUATOR.value,
        Role.RESEARCHER.value,
    }
)
_REGISTRY_READERS = frozenset({Role.REGISTRY_ANALYST.value, Role.HUB_OPERATOR.value})
REGISTRY_ROLES: dict[Action, frozenset[str]] = {
    Action.REGISTRY_VIEW: _FACILITY_DATA_ROLES | _REGISTRY_READERS,
    Action.REGISTRY_QUERY: _REGISTRY_READERS,
    Action.REGISTRY_QUALITY: _REGISTRY_READERS | {Role.ADMIN.value, Role.DATA_MANAGER.value},
    Action.REGISTRY_DICOM: frozenset({Role.REGISTRY_ANALYST.value, Role.RESEARCHER.value}),
    Action.REGISTRY_APPROVE: frozenset({Role.HUB_OPERATOR.value}),
}
REGISTRY_ACTIONS = frozenset(REGISTRY_ROLES)
# ---- hub feed: what non-admin roles may do in their own facility (admins may do all) ----
HUB_FEED_ACTIONS = frozenset(
    {Action.FEED_READ, Action.FEED_RETRACT, Action.FEED_WEBHOOK_MANAGE, Action.FEED_PULL}
)
ROLE_GRANTS: dict[str, frozenset[Action]] = {
    **{role.value: frozenset({Action.FEED_READ}) for role in Role},
    Role.SITE_NODE.value: HUB_FEED_ACTIONS | {Action.FEED_WEBHOOK_LOG},
    Role.ADMIN.value: frozenset({Action.FEED_READ, Action.FEED_WEBHOOK_LOG}),  # own facility's
    Role.DATA_MANAGER.value: frozenset({Action.FEED_READ, Action.FEED_PULL}),
}
# ---- end hub feed ----
# A facility admin may do all of these, in its own facility only.
ADMIN_ACTIONS = (
    frozenset(Action)
    - {Action.FACILITY_CREATE}
    - PANEL_ACTIONS
    - PERF_ACTIONS
    - REGISTRY_ACTIONS
    - _ROLE_ONLY
)
# What the node operator may do in any facility: administration, never patient data.
OPERATOR_ACTIONS = (
    frozenset(Action)
    - {
        Action.DEID_MAPPING_EXPORT,
        Action.DEID_BURNED_IN_REVIEW,
        Action.QUARANTINE_REVIEW,
    }
    - PANEL_ACTIONS
    - PERF_ACTIONS
    - REGISTRY_ACTIONS
    - _ROLE_ONLY
    - {Action.SHARING_POLICY_SET, Action.SHARING_CASE, Action.SHARING_STATUS}
    - HUB_FEED_ACTIONS
)
# What every user may do to its own account (``owner_id`` equal to the actor's user id).
SELF_ACTIONS = frozenset(
    {
        Action.TOKEN_LIST,
        Action.TOKEN_CREATE,
        Action.TOKEN_REVOKE,
        Action.USER_SET_PASSWORD,
        Action.SESSION_MANAGE,
    }
)
# The operator may act on other users' accounts except by minting credentials for them.
OPERATOR_NOT_FOR_OTHERS = frozenset({Action.TOKEN_CREATE})
# Roles the API and portal may grant; node-operator only comes from the command line.
CLI_ONLY_ROLES = frozenset({Role.NODE_OPERATOR.value, Role.HUB_OPERATOR.value})
GRANTABLE_ROLES = tuple(r.value for r in Role if r.value not in CLI_ONLY_ROLES)


def is_system(actor: Actor) -> bool:
    """The local command line and internal jobs: no user account, acting as admin."""
    return actor.user_id is None and actor.role in (Role.ADMIN.value, Role.NODE_OPERATOR.value)


def is_operator(actor: Actor) -> bool:
    return actor.role == Role.NODE_OPERATOR.value or is_system(actor)


def facility_of(user: User) -> int | None:
    """The facility that owns an account; operator accounts belong to the node (None)."""
    return None if user.role == Role.NODE_OPERATOR.value else user.facility_id


def check_role(actor: Actor, action: Action) -> None:
    """Route-level check: could ``actor``'s role ever do ``action`` (before loading objects)?"""
    if is_system(actor):
        return
    if action in PERF_ACTIONS:
        if action not in PERF_ROLE_ACTIONS.get(actor.role, frozenset()):
            raise Forbidden(f"Your role ({actor.role or 'none'}) may not do {action.value}.")
        return
    if action in REGISTRY_ACTIONS:  # national registry: by role alone (see REGISTRY_ROLES)
        if actor.role in REGISTRY_ROLES[action]:
            return
    elif is_operator(actor):
        if action in OPERATOR_ACTIONS:
            return
    elif (
        action in SELF_ACTIONS
        or (actor.role == Role.ADMIN.value and action in ADMIN_ACTIONS)
        or (actor.role == Role.PANEL.value and action in PANEL_ACTIONS)
        or _role_grants(actor, action)
        or action in ROLE_GRANTS.get(actor.role, frozenset())
    ):
        return
    raise Forbidden(f"Your role ({actor.role or 'none'}) may not do {action.value}.")


def may_role(actor: Actor, action: Action) -> bool:
    try:
        check_role(actor, action)
    except Forbidden:
        return False
    return True


def authorize(
    actor: Actor,
    action: Action,
    facility_id: int | None,
    *,
    owner_id: int | None = None,
    missing: str = "Not found.",
) -> None:
    """Allow ``action`` on an object of ``facility_id`` (None: a node-level object) or raise.

    ``owner_id`` is the user an account object (token, password, session) belongs to.
    ``missing`` is the message the caller gives for a missing object: another facility's
    object is answered with it, so it is indistinguishable from one that does not exist.
    """
    if is_system(actor):
        return
    if is_operator(actor):
        mine = owner_id is not None and owner_id == actor.user_id
        if action in OPERATOR_ACTIONS and (mine or action not in OPERATOR_NOT_FOR_OTHERS):
            return
        if action in OPERATOR_NOT_FOR_OTHERS and owner_id is not None and not mine:
            raise Forbidden(f"The node operator may not do {action.value} for other users.")
        raise Forbidden(f"The node operator may not do {action.value}.")
    if action in NODE_WIDE_ROLE_ACTIONS and _role_grants(actor, action):
        return
    if facility_id is None or facility_id != actor.facility_id:
        raise NotFound(missing)
    if owner_id is not None and owner_id == actor.user_id and action in SELF_ACTIONS:
        return
    if actor.role == Role.ADMIN.value and action in ADMIN_ACTIONS:
        return
    if _role_grants(actor, action) or action in ROLE_GRANTS.get(actor.role, frozenset()):
        return
    if action in SELF_ACTIONS:
        raise Forbidden(f"Only admins may do {action.value} for other users.")
    raise Forbidden(f"Your role ({actor.role or 'none'}) may not do {action.value}.")


def may(
    actor: Actor, action: Action, facility_id: int | None, *, owner_id: int | None = None
) -> bool:
    """``authorize`` as a yes/no, for pages that show or hide a control."""
    try:
        authorize(actor, action, facility_id, owner_id=owner_id)
    except (Forbidden, NotFound):
        return False
    return True


def scope(actor: Actor, action: Action) -> int | None:
    """The facility a list is filtered to: the actor's own, or None (all) for the operator."""
    if is_operator(actor):
        check_role(actor, action)
        return None
    authorize(actor, action, actor.facility_id)
    return actor.facility_id


def grantable(role: str, *, allow_operator: bool = False) -> None:
    """Refuse granting the node-wide roles (node- and hub-operator) outside the command line."""
    if role in CLI_ONLY_ROLES and not allow_operator:
        raise Forbidden(f"The {role} role can only be granted from the command line.")


# --- federated learning (issue 14) ---------------------------------------------------------
# A federated study is a consortium object at the hub, not one facility's. Its records hold
# aggregate metrics only (no case, image or pseudonym). Who sees a study run:
# * the hub operator and registry analysts (consortium-wide roles): every study;
# * admins, evaluators and researchers of a facility that took part (a study site mapped to
#   that facility): that study;
# * everyone else: nothing; the study is answered like a missing one (404).
# Studies are created and registered from the command line only (system actor).
FEDERATED_HUB_ROLES = frozenset({Role.HUB_OPERATOR.value, Role.REGISTRY_ANALYST.value})
FEDERATED_SITE_ROLES = frozenset({Role.ADMIN.value, Role.EVALUATOR.value, Role.RESEARCHER.value})
FEDERATED_ACTIONS = frozenset({Action.FEDERATED_READ})


def check_federated_role(actor: Actor, action: Action) -> None:
    """Route-level check for the federated pages and API."""
    if action not in FEDERATED_ACTIONS:
        raise Forbidden(f"{action.value} is not a federated action.")
    if is_system(actor) or actor.role in FEDERATED_HUB_ROLES | FEDERATED_SITE_ROLES:
        return
    raise Forbidden(f"Your role ({actor.role or 'none'}) may not do {action.value}.")


def authorize_federated(
    actor: Actor,
    action: Action,
    participant_facilities: Iterable[int],
    *,
    missing: str = "Not found.",
) -> None:
    """Allow ``action`` on a study run whose sites map to ``participant_facilities``."""
    check_federated_role(actor, action)
    if is_system(actor) or actor.role in FEDERATED_HUB_ROLES:
        return
    if actor.facility_id is None or actor.facility_id not in set(participant_facilities):
        raise NotFound(missing)
