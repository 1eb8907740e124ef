"""The hub change feed's log: one row per change to a case, numbered in COMMIT order.

Why a counter row and not an autoincrement id: an id is drawn when a row is inserted, but rows
become visible when their transaction commits. Transaction T1 may draw 41 and T2 42, T2
commits first; a reader that already went past 42 (``since=42``) never sees 41. The feed must
never skip an event, so the number is taken from a single counter row
(``feed_counter``, ``UPDATE ... SET value = value + n RETURNING value``) inside the writing
transaction, as late as possible (the last statement before the commit). On PostgreSQL the
UPDATE holds the row lock until the commit: a second writer waits on the row, then reads the
committed value, so a larger number is always committed later than a smaller one. On SQLite a
writing transaction holds the database write lock until its commit, which orders it the same
way. The price is that feed writers serialise between drawing the number and committing, which
is why the draw comes last (after the index rows, just before the audit row and the commit).
An advisory lock would work too on PostgreSQL but has no SQLite counterpart; the counter row
behaves the same on both.

A writer that rolls back also rolls its UPDATE back: numbers have no gaps.

This module sits in ``pair.audit`` (what happened, in the caller's transaction) so that the
repository, which writes the events, and ``pair.sharing.feed``, which serves them and pulls
through the repository, do not import each other. Events carry only de-identified identifiers
(study UIDs as stored at this node, counts), never PHI.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import JSON, BigInteger, DateTime, Integer, String, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from pair.core.errors import LimitExceeded
from pair.db.base import Base, utcnow
from pair.db.values import column_text

BigId = BigInteger().with_variant(Integer, "sqlite")
COUNTER_ID = 1
DEFAULT_QUOTA = 0  # ``FeedQuota.facility_id`` of the node-wide default (PAIR_HUB_QUOTA_*)

STUDY_UPDATED = "study.updated"
STUDY_RETRACTED = "study.retracted"


class FeedCounter(Base):
    """One row (id 1): the last sequence number handed out."""

    __tablename__ = "feed_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigId, default=0)


class FeedEvent(Base):
    __tablename__ = "feed_event"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    facility_id: Mapped[int | None] = mapped_column(default=None, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class FeedQuota(Base):
    """What a facility may store at this node; ``facility_id`` 0 is the default for all.
    0 in a limit: no limit. Only nodes with a row check anything (the hub)."""

    __tablename__ = "feed_quota"

    facility_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    max_instances: Mapped[int] = mapped_column(BigId, default=0)
    max_bytes: Mapped[int] = mapped_column(BigId, default=0)


def _draw(session: Session, n: int) -> int:
    """Reserve ``n`` numbers; returns the last one. Locks the counter row until the commit."""
    stmt = (
        update(FeedCounter)
        .where(FeedCounter.id == COUNTER_ID)
        .values(value=FeedCounter.value + n)
        .returning(FeedCounter.value)
    )
    last = session.execute(stmt).scalar_one_or_none()
    if last is None:  # a schema made with create_all (the migration inserts the row)
        session.execute(insert(FeedCounter).values(id=COUNTER_ID, value=n))
        last = n
    return int(last)


def record_changes(
    session: Session, facility_id: int | None, events: Sequence[tuple[str, str, dict[str, Any]]]
) -> None:
    """Append ``(kind, study_uid, payload)`` events in order, in the caller's transaction.
    Call it last before the commit (see the module docstring)."""
    if not events:
        return
    last = _draw(session, len(events))
    first = last - len(events) + 1
    session.execute(
        insert(FeedEvent),
        [
            {
                "seq": first + i,
                "at": utcnow(),
                "facility_id": facility_id,
                "kind": kind,
                "study_uid": column_text(study_uid, 64),
                "payload": payload,
            }
            for i, (kind, study_uid, payload) in enumerate(events)
        ],
    )


def record_change(
    session: Session,
    facility_id: int | None,
    kind: str,
    *,
    study_uid: str = "",
    payload: dict[str, Any] | None = None,
) -> None:
    record_changes(session, facility_id, [(kind, study_uid, payload or {})])


_instance = sa.table("instance", sa.column("series_pk"), sa.column("size"))
_series = sa.table("series", sa.column("id"), sa.column("study_pk"))
_study = sa.table("study", sa.column("id"), sa.column("facility_id"))


def _check_quota(session: Session, facility_id: int, instances: int, size: int) -> None:
    rows = session.scalars(
        select(FeedQuota).where(FeedQuota.facility_id.in_((facility_id, DEFAULT_QUOTA)))
    ).all()
    if not rows:
        return
    quota = min(rows, key=lambda q: q.facility_id != facility_id)  # the facility's own first
    if not quota.max_instances and not quota.max_bytes:
        return
    used_n, used_bytes = session.execute(
        select(sa.func.count(), sa.func.coalesce(sa.func.sum(_instance.c.size), 0))
        .select_from(_instance)
        .join(_series, _series.c.id == _instance.c.series_pk)
        .join(_study, _study.c.id == _series.c.study_pk)
        .where(_study.c.facility_id == facility_id)
    ).one()
    used_n, used_bytes = int(used_n), int(used_bytes)  # PostgreSQL's sum is a Decimal
    # the batch's rows are already inserted (flushed) when this runs
    over_n = quota.max_instances and used_n > quota.max_instances
    over_bytes = quota.max_bytes and used_bytes > quota.max_bytes
    if over_n or over_bytes:
        raise LimitExceeded(
            f"Storage quota of this facility exceeded: {used_n - instances} instances and "
            f"{used_bytes - size} bytes stored, this batch adds {instances} instances and "
            f"{size} bytes; the quota is {quota.max_instances or 'unlimited'} instances and "
            f"{quota.max_bytes or 'unlimited'} bytes (PAIR_HUB_QUOTA_MAX_INSTANCES / "
            "PAIR_HUB_QUOTA_MAX_BYTES). Nothing of the batch was stored.",
            details={"limit": "hub_quota", "instances": used_n, "bytes": used_bytes},
        )


def record_stored(session: Session, facility_id: int, stored: Sequence[tuple[str, int]]) -> None:
    """Ingest stage two's hook: ``(study_uid, size)`` of each newly indexed instance. Refuses
    the batch past the facility's quota, then records one ``study.updated`` per study."""
    if not stored:
        return
    _check_quota(session, facility_id, len(stored), sum(size for _, size in stored))
    per_study: dict[str, int] = {}
    for study_uid, _ in stored:
        per_study[study_uid] = per_study.get(study_uid, 0) + 1
    record_changes(
        session,
        facility_id,
        [(STUDY_UPDATED, uid, {"instances_added": n}) for uid, n in per_study.items()],
    )
