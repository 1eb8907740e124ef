"""Server-side portal sessions (``web_session``): create, load, save, list and end them.

The browser holds only a random id; the table stores its SHA-256, the signed-in user and a small
JSON dict (CSRF token, flash messages). A session ends when its row is deleted (sign-out, an
admin's forced sign-out, a password change) or when it has been idle or alive too long.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from pair.accounts.models import User, WebSession
from pair.accounts.policy import Action, authorize, facility_of
from pair.audit.service import Actor, record
from pair.core import security
from pair.core.config import Settings
from pair.core.errors import NotFound

TOUCH_EVERY_S = 60.0  # last_seen is written at most this often (not on every request)


@dataclass(frozen=True)
class Lifetimes:
    idle_s: float
    absolute_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Lifetimes:
        return cls(settings.session_idle_timeout_s, settings.session_absolute_timeout_s)


@dataclass(frozen=True)
class Loaded:
    id: int
    user_id: int | None
    data: dict[str, Any]
    last_seen_s: float


def _alive(lifetimes: Lifetimes, now: float) -> Any:
    return (WebSession.expires_s > now) & (WebSession.last_seen_s > now - lifetimes.idle_s)


def load(session: Session, lifetimes: Lifetimes, cookie: str) -> Loaded | None:
    """The live session behind a cookie value, or None (unknown, ended or expired)."""
    if not cookie or len(cookie) > 128:
        return None
    now = time.time()
    row = session.scalar(
        select(WebSession).where(
            WebSession.token_hash == security.hash_token(cookie), _alive(lifetimes, now)
        )
    )
    if row is None:
        return None
    return Loaded(row.id, row.user_id, dict(row.data or {}), row.last_seen_s)


def create(
    session: Session,
    lifetimes: Lifetimes,
    user_id: int | None,
    data: dict[str, Any],
    address: str = "",
    user_agent: str = "",
) -> tuple[int, str]:
    """A new row and the cookie value for it (shown to the browser only)."""
    now = time.time()
    purge(session, lifetimes, now)
    plain = secrets.token_urlsafe(32)
    row = WebSession(
        token_hash=security.hash_token(plain),
        user_id=user_id,
        data=data,
        created_s=now,
        last_seen_s=now,
        expires_s=now + lifetimes.absolute_s,
        address=address[:64],
        user_agent="".join(c for c in user_agent if c.isprintable())[:256],
    )
    session.add(row)
    session.flush()
    return row.id, plain


def save(session: Session, session_id: int, data: dict[str, Any] | None) -> None:
    """Store new data (None: only mark it used). A row deleted meanwhile stays deleted."""
    values: dict[str, Any] = {"last_seen_s": time.time()}
    if data is not None:
        values["data"] = data
    session.execute(update(WebSession).where(WebSession.id == session_id).values(**values))


def delete_one(session: Session, session_id: int) -> None:
    session.execute(delete(WebSession).where(WebSession.id == session_id))


def purge(session: Session, lifetimes: Lifetimes, now: float | None = None) -> None:
    now = time.time() if now is None else now
    session.execute(
        delete(WebSession).where(
            or_(WebSession.expires_s <= now, WebSession.last_seen_s <= now - lifetimes.idle_s)
        )
    )


def list_for_facility(
    session: Session, lifetimes: Lifetimes, facility_id: int | None
) -> list[WebSession]:
    """Live signed-in sessions of the facility's users, newest first."""
    stmt = (
        select(WebSession)
        .join(User, User.id == WebSession.user_id)
        .where(_alive(lifetimes, time.time()), User.facility_id == facility_id)
        .order_by(WebSession.last_seen_s.desc())
    )
    return list(session.scalars(stmt))


def end_for_facility(session: Session, session_id: int, actor: Actor) -> WebSession:
    """Forced sign-out by an admin of the same facility; another facility's session is
    reported as not found (its existence is not revealed)."""
    row = session.get(WebSession, session_id)
    missing = f"No session with id {session_id}."
    if row is None or row.user is None:
        raise NotFound(missing)
    authorize(
        actor, Action.SESSION_MANAGE, facility_of(row.user), owner_id=row.user_id, missing=missing
    )
    record(
        session,
        actor,
        "session.end",
        "web_session",
        str(session_id),
        detail={"user_id": row.user_id},
    )
    session.delete(row)
    return row


def end_for_user(session: Session, user_id: int, keep: int | None = None) -> int:
    """End every session of a user except ``keep`` (password change); returns how many."""
    stmt = delete(WebSession).where(WebSession.user_id == user_id)
    if keep is not None:
        stmt = stmt.where(WebSession.id != keep)
    result = session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)
