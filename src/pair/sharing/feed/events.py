"""Reading the change feed: events after a sequence number, as JSON-ready dicts.

At the hub every member facility reads every event (hub data are shared with all members);
at a site (``PAIR_ROLE=site``) a user reads only its own facility's events, as with any other
facility data at a node shared by several facilities.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.audit.feedlog import FeedEvent
from pair.audit.service import Actor
from pair.core.config import Settings

MAX_LIMIT = 1000


def reader_scope(settings: Settings, actor: Actor) -> int | None:
    """The facility a reader's feed is limited to: None (all) at the hub."""
    return None if settings.role == "hub" else actor.facility_id


def event_json(event: FeedEvent, facility_code: str | None) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "kind": event.kind,
        "facility": facility_code or "",
        "study_uid": event.study_uid,
        "payload": event.payload,
    }


def events_after(
    session: Session, since: int, limit: int, facility_id: int | None = None
) -> list[dict[str, Any]]:
    """Events with ``seq > since`` in order. Numbers are commit-ordered (``feedlog``), so a
    reader that resumes from the last number it saw never misses one committed later."""
    stmt = (
        select(FeedEvent, Facility.code)
        .outerjoin(Facility, Facility.id == FeedEvent.facility_id)
        .where(FeedEvent.seq > since)
        .order_by(FeedEvent.seq)
        .limit(limit)
    )
    if facility_id is not None:
        stmt = stmt.where(FeedEvent.facility_id == facility_id)
    return [event_json(event, code) for event, code in session.execute(stmt)]


def last_seq(session: Session) -> int:
    from sqlalchemy import func

    return int(session.scalar(select(func.coalesce(func.max(FeedEvent.seq), 0))) or 0)


def facility_code(session: Session, facility_id: int | None) -> str:
    if facility_id is None:
        return ""
    return session.scalar(select(Facility.code).where(Facility.id == facility_id)) or ""
