"""Injected dependencies: node, DB session, current user and role checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from pair.accounts import policy
from pair.accounts import service as accounts
from pair.accounts.models import Role, User
from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.core.errors import Forbidden, Unauthorized
from pair.core.node import Node
from pair.web.csrf import header_ok
from pair.web.sessions import USER_KEY

SESSION_USER_KEY = USER_KEY  # the signed-in user in the server-side session


def get_node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def get_session(node: Node = Depends(get_node)) -> Iterator[Session]:
    with node.db.session() as session:
        yield session


# The one unit of work of a request. "function" scope: FastAPI closes the dependency right after
# the route returns, BEFORE the response is sent, so the transaction commits first (a 2xx means
# the write is durable and the next request sees it) and rolls back if the route raises. Routes
# never call ``session.commit()`` (tests/web/test_unit_of_work.py).
SessionDep: Any = Depends(get_session, scope="function")


def commit_before_refusal(session: Session) -> None:
    """Commit now because the route is about to raise: the one write a refused request keeps
    (a wrong current password counts towards the sign-in throttle). Everything else is left to
    ``SessionDep``, which would roll it back."""
    session.commit()


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def optional_user(request: Request, session: Session = SessionDep) -> User | None:
    """The user behind a bearer token, or behind the portal's session cookie."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization header must be 'Bearer <token>'.")
        return accounts.authenticate_token(session, value.strip())
    user_id = request.scope.get("session", {}).get(SESSION_USER_KEY)
    if user_id is not None:
        if not header_ok(request):
            raise Forbidden("Cookie-authenticated changes need the X-CSRF-Token header.")
        user = session.get(User, int(user_id))
        if user is not None and user.active:
            return user
    return None


def current_user(user: User | None = Depends(optional_user)) -> User:
    if user is None:
        raise Unauthorized("Authentication required: send 'Authorization: Bearer <token>'.")
    return user


def authenticated_actor(request: Request, user: User = Depends(current_user)) -> Actor:
    """Any signed-in account, the node operator included (administration routes)."""
    return accounts.actor_for(user, client_address(request))


def facility_member(actor: Actor = Depends(authenticated_actor)) -> Actor:
    """A user of a facility: the node operator reads no facility's data (``accounts.policy``)."""
    if policy.is_operator(actor):
        raise Forbidden("The node operator has no access to facility data.")
    return actor


# data routes: every facility-scoped route depends on this
current_actor = facility_member


def own_facility(action: Action) -> Callable[..., Actor]:
    """Dependency factory: the actor's role may do ``action`` (objects are checked by services,
    which answer another facility's objects with 404)."""

    def check(actor: Actor = Depends(authenticated_actor)) -> Actor:
        policy.check_role(actor, action)
        return actor

    return check


def may_do(action: Action) -> Callable[..., bool]:
    """Dependency factory for pages: whether to offer a control for ``action``."""

    def check(actor: Actor = Depends(authenticated_actor)) -> bool:
        return policy.may(actor, action, actor.facility_id)

    return check


def require_roles(*roles: Role) -> Callable[..., Actor]:
    """Dependency factory: admins pass every check; others need one of ``roles``."""
    allowed = {r.value for r in roles}

    def check(actor: Actor = Depends(facility_member)) -> Actor:
        if actor.role != Role.ADMIN.value and actor.role not in allowed:
            names = ", ".join(sorted(allowed | {Role.ADMIN.value}))
            raise Forbidden(f"Role {actor.role!r} may not do this; required: {names}.")
        return actor

    return check


# Page (HTML) counterparts: every capability's pages depend on these.


@dataclass(frozen=True)
class PortalUser:
    """What templates know about the signed-in user (a plain copy: safe after a rollback)."""

    id: int
    name: str
    role: str
    facility_id: int
    facility_name: str


def page_user(request: Request, user: User | None = Depends(optional_user)) -> User:
    """The signed-in user of a portal page (HTML 401 pages redirect to the sign-in form)."""
    if user is None:
        raise Unauthorized("Please sign in to see this page.")
    request.state.user = PortalUser(
        user.id, user.name, user.role, user.facility_id, user.facility.name
    )
    return user


def page_any_actor(request: Request, user: User = Depends(page_user)) -> Actor:
    """Any signed-in account, the node operator included (administration pages)."""
    return accounts.actor_for(user, client_address(request))


def page_actor(actor: Actor = Depends(page_any_actor)) -> Actor:
    """A facility member: the node operator opens no facility's data pages."""
    if policy.is_operator(actor):
        raise Forbidden("The node operator has no access to facility data.")
    return actor


def page_may(action: Action) -> Callable[..., Actor]:
    """Pages counterpart of ``web.deps.own_facility``: the actor's role may do ``action``."""

    def check(actor: Actor = Depends(page_any_actor)) -> Actor:
        if not policy.may_role(actor, action):
            raise Forbidden(f"Your role ({actor.role}) cannot open this page.")
        return actor

    return check


def page_roles(*roles: Role) -> Callable[..., Actor]:
    """Like ``require_roles`` for pages: admins pass, others need one of ``roles``."""
    allowed = {r.value for r in roles}

    def check(actor: Actor = Depends(page_actor)) -> Actor:
        if actor.role != Role.ADMIN.value and actor.role not in allowed:
            names = ", ".join(sorted(allowed | {Role.ADMIN.value}))
            raise Forbidden(f"Your role ({actor.role}) cannot open this page; it needs: {names}.")
        return actor

    return check
