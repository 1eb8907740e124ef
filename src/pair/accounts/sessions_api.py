"""Sign-in sessions API: an admin's list and forced sign-out (own facility), and the
self-service password change that ends the user's other sessions."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pair.accounts import service, throttle, websessions
from pair.accounts.models import Role, User, WebSession
from pair.audit.service import Actor, record
from pair.core.config import Settings
from pair.core.errors import Forbidden, Unauthorized
from pair.core.node import Node
from pair.web.deps import (
    SessionDep,
    authenticated_actor,
    commit_before_refusal,
    get_node,
    require_roles,
)
from pair.web.sessions import current_session_id

router = APIRouter(prefix="/api", tags=["administration"])
admin_only = require_roles(Role.ADMIN)


class SessionOut(BaseModel):
    id: int
    user_id: int
    user_name: str
    address: str
    user_agent: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    current: bool


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


def lifetimes(settings: Settings) -> websessions.Lifetimes:
    return websessions.Lifetimes.from_settings(settings)


def session_out(row: WebSession, current: int | None) -> SessionOut:
    def at(seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    return SessionOut(
        id=row.id,
        user_id=row.user_id or 0,
        user_name=row.user.name if row.user else "",
        address=row.address,
        user_agent=row.user_agent,
        created_at=at(row.created_s),
        last_seen_at=at(row.last_seen_s),
        expires_at=at(row.expires_s),
        current=row.id == current,
    )


@router.get("/sessions", response_model=list[SessionOut])
def list_sessions(
    request: Request,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> list[SessionOut]:
    """Signed-in portal sessions of the admin's own facility."""
    rows = websessions.list_for_facility(session, lifetimes(node.settings), actor.facility_id)
    current = current_session_id(request)
    return [session_out(r, current) for r in rows]


@router.delete("/sessions/{session_id}", status_code=204)
def end_session(
    session_id: int, session: Session = SessionDep, actor: Actor = Depends(admin_only)
) -> None:
    """Forced sign-out; a session of another facility is 404."""
    websessions.end_for_facility(session, session_id, actor)


def change_password(
    session: Session,
    settings: Settings,
    actor: Actor,
    current_password: str,
    new_password: str,
    keep_session: int | None,
) -> int:
    """Check the current password (throttled like sign-in), apply the policy, store the new
    password and end the user's other sessions; returns how many were ended."""
    user = session.get(User, actor.user_id) if actor.user_id is not None else None
    if user is None:
        raise Forbidden("Only a user account can change its password.")
    rules = throttle.Rules.from_settings(settings)
    throttle.check(session, rules, user.name, actor.source)
    try:
        service.authenticate_password(session, user.name, current_password)
    except Unauthorized:
        throttle.failure(session, rules, user.name, actor.source, actor)
        record(session, actor, "user.password", "user", str(user.id), outcome="failure")
        commit_before_refusal(session)
        raise Forbidden("The current password is wrong.") from None
    service.set_password(
        session, user, new_password, actor, min_length=settings.password_min_length
    )
    ended = websessions.end_for_user(session, user.id, keep=keep_session)
    record(session, actor, "user.password", "user", str(user.id), detail={"sessions_ended": ended})
    return ended


@router.post("/me/password", status_code=204)
def my_password(
    body: PasswordChange,
    request: Request,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(authenticated_actor),
) -> None:
    """Change one's own password (the current one is required); other sessions end."""
    change_password(
        session,
        node.settings,
        actor,
        body.current_password,
        body.new_password,
        current_session_id(request),
    )
