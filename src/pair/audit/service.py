"""Record audit events and changes inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from pair.audit.models import AuditEvent, ChangeEvent
from pair.db.values import column_text


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user (API, portal, CLI) or a DICOM peer."""

    user_id: int | None
    user_name: str
    facility_id: int | None
    role: str
    source: str = ""

    @classmethod
    def system(cls, source: str = "cli", facility_id: int | None = None) -> Actor:
        return cls(None, "system", facility_id, "admin", source)


def record(
    session: Session,
    actor: Actor,
    action: str,
    object_type: str = "",
    object_id: str = "",
    *,
    outcome: str = "success",
    detail: dict[str, Any] | None = None,
    facility_id: int | None = None,
) -> AuditEvent:
    """``facility_id``: the facility acted upon, when not the actor's own (operator actions
    are logged in the affected facility's audit log).

    What a request names (a user name typed at sign-in, a UID in a URL) may be any length and
    hold a NUL: the event is stored cut to its columns, never refused."""
    event = AuditEvent(
        user_id=actor.user_id,
        user_name=column_text(actor.user_name, 128),
        facility_id=facility_id if facility_id is not None else actor.facility_id,
        action=column_text(action, 64),
        object_type=column_text(object_type, 64),
        object_id=column_text(object_id, 128),
        source=column_text(actor.source, 128),
        outcome=column_text(outcome, 16),
        detail=detail or {},
    )
    session.add(event)
    return event


def record_changes(
    session: Session,
    facility_id: int | None,
    kind: str,
    object_type: str,
    object_ids: Sequence[str],
    *,
    shareable: bool = True,
) -> None:
    """``record_change`` for many objects in one statement (ingest batches), in the given order."""
    if not object_ids:
        return
    session.execute(
        insert(ChangeEvent),
        [
            {
                "facility_id": facility_id,
                "kind": kind,
                "object_type": object_type,
                "object_id": column_text(object_id, 128),
                "shareable": shareable,
            }
            for object_id in object_ids
        ],
    )


def record_change(
    session: Session,
    facility_id: int | None,
    kind: str,
    object_type: str,
    object_id: str,
    *,
    shareable: bool = True,
) -> None:
    session.add(
        ChangeEvent(
            facility_id=facility_id,
            kind=kind,
            object_type=object_type,
            object_id=column_text(object_id, 128),
            shareable=shareable,
        )
    )
