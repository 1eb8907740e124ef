"""Admin operations not covered by ``pair.accounts.service``; each write is audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility, User
from pair.accounts.policy import Action, authorize, facility_of, scope
from pair.audit.models import AuditEvent
from pair.audit.service import Actor, record
from pair.core.errors import Conflict, Invalid, NotFound
from pair.deid import service as deid_service
from pair.deid.profile import default_profile_text, profile_for, profile_warnings


def set_user_active(session: Session, user_id: int, active: bool, actor: Actor) -> User:
    user = session.get(User, user_id)
    missing = f"No user with id {user_id}."
    if user is None:
        raise NotFound(missing)
    # not a self action: the owner is not passed, so nobody but an admin/operator passes
    authorize(actor, Action.USER_SET_ACTIVE, facility_of(user), missing=missing)
    if user.id == actor.user_id and not active:
        raise Conflict("You cannot deactivate your own account.")
    user.active = active
    record(
        session,
        actor,
        "user.activate" if active else "user.deactivate",
        "user",
        str(user.id),
        facility_id=facility_of(user),
    )
    return user


def set_deid_profile(session: Session, facility_id: int, text: str, actor: Actor) -> Facility:
    """Validate (``pair.deid``'s parser) and store a facility's profile; empty = site default."""
    facility = session.get(Facility, facility_id)
    missing = f"No facility with id {facility_id}."
    if facility is None:
        raise NotFound(missing)
    authorize(actor, Action.DEID_PROFILE_WRITE, facility.id, missing=missing)
    text = text.replace("\r\n", "\n").strip()
    deid_service.set_facility_profile(session, facility, text + "\n" if text else None, actor)
    record(
        session, actor, "deid.profile.update", "facility", str(facility.id), facility_id=facility.id
    )
    return facility


def default_deid_profile() -> str:
    """The node's default profile text, shown when a facility has none of its own."""
    return default_profile_text()


def deid_warnings(profile_text: str | None) -> list[str]:
    """Warnings for a facility's effective profile (none for one that no longer parses)."""
    try:
        return profile_warnings(profile_for(profile_text))
    except Invalid:
        return []


# ---- audit log view ----------------------------------------------------------------------


@dataclass
class AuditQuery:
    user: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    date_from: date | None = None
    date_to: date | None = None  # inclusive (whole day, UTC)
    limit: int = 50
    offset: int = 0


def search_audit(
    session: Session, q: AuditQuery, actor: Actor | None = None
) -> tuple[int, list[AuditEvent]]:
    """With ``actor``: its facility's events only (every event for the node operator)."""
    stmt = select(AuditEvent)
    facility_id = scope(actor, Action.AUDIT_READ) if actor is not None else None
    if facility_id is not None:
        stmt = stmt.where(AuditEvent.facility_id == facility_id)
    if q.user:
        stmt = stmt.where(AuditEvent.user_name == q.user)
    if q.action:
        stmt = stmt.where(AuditEvent.action.startswith(q.action))
    if q.object_type:
        stmt = stmt.where(AuditEvent.object_type == q.object_type)
    if q.object_id:
        stmt = stmt.where(AuditEvent.object_id == q.object_id)
    if q.date_from:
        stmt = stmt.where(AuditEvent.at >= datetime.combine(q.date_from, time(), UTC))
    if q.date_to:
        end = datetime.combine(q.date_to + timedelta(days=1), time(), UTC)
        stmt = stmt.where(AuditEvent.at < end)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(AuditEvent.id.desc()).limit(q.limit).offset(q.offset))
    return total, list(rows)


def audit_facets(session: Session, actor: Actor | None = None) -> dict[str, list[str]]:
    """Distinct users, actions and object types (of the actor's scope), for the drop-downs."""
    facility_id = scope(actor, Action.AUDIT_READ) if actor is not None else None

    def distinct(column: Any) -> list[str]:
        stmt = select(column).distinct()
        if facility_id is not None:
            stmt = stmt.where(AuditEvent.facility_id == facility_id)
        return sorted(v for v in session.scalars(stmt) if v)

    return {
        "users": distinct(AuditEvent.user_name),
        "actions": distinct(AuditEvent.action),
        "object_types": distinct(AuditEvent.object_type),
    }
