"""Hub cases: listing and reading any member's study, retraction by the origin facility, and
removing a study's index rows (a retraction at the hub, its propagation at a subscriber).

Removing deletes the study's instance, series and study rows in the caller's transaction and
returns the files; they are deleted after the commit (``delete_files``) and only when no row
references them any more (a file left by a crash in between is removed by the start-up
reconciliation, ``pair.repository.ingest.reconcile``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, literal, select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.accounts.policy import Action, authorize
from pair.audit.feedlog import DEFAULT_QUOTA, STUDY_RETRACTED, FeedQuota, record_change
from pair.audit.service import Actor, record
from pair.core.errors import Invalid, NotFound
from pair.core.node import Node
from pair.repository.ingest import content_store
from pair.repository.models import Instance, Series, Study

MISSING = "No such study at the hub."


def require_hub(node: Node) -> None:
    if node.settings.role != "hub":
        raise NotFound("This node is not a hub (PAIR_ROLE=hub).")


@dataclass(frozen=True)
class CaseFilter:
    """What a member browses the hub's cases by: origin facility code, modality, study date."""

    origin: str = ""
    modality: str = ""
    date_from: str = ""  # YYYYMMDD, inclusive
    date_to: str = ""

    @classmethod
    def parse(
        cls, origin: str = "", modality: str = "", date_from: str = "", date_to: str = ""
    ) -> CaseFilter:
        """Checked values (422 with a sentence otherwise); dates as YYYY-MM-DD or YYYYMMDD."""
        origin, modality = origin.strip().upper(), modality.strip().upper()
        if origin and not _CODE.fullmatch(origin):
            raise Invalid("The origin must be a facility code (letters and digits, at most 16).")
        if modality and not _MODALITY.fullmatch(modality):
            raise Invalid("The modality must be a DICOM modality code such as CT or DX.")
        found = cls(origin, modality, _date(date_from, "from"), _date(date_to, "to"))
        if found.date_from and found.date_to and found.date_from > found.date_to:
            raise Invalid("The 'from' date is after the 'to' date.")
        return found

    def params(self) -> dict[str, str]:
        """As query parameters of ``GET /api/hub/studies`` (empty ones left out)."""
        return {k: v for k, v in asdict(self).items() if v}


_CODE = re.compile(r"[A-Z0-9_-]{1,16}")
_MODALITY = re.compile(r"[A-Z0-9]{1,16}")


def _date(value: str, which: str) -> str:
    value = value.strip().replace("-", "")
    if not value:
        return ""
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise Invalid(f"The '{which}' date must be a date as YYYY-MM-DD.") from None
    return value


def list_cases(
    session: Session, limit: int, offset: int, where: CaseFilter | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Every member's cases, newest first, and how many match: de-identified identifiers, the
    origin facility's code, the (shifted) study date and counts only."""
    where = where or CaseFilter()
    stmt = select(Study, Facility.code).join(Facility, Facility.id == Study.facility_id)
    if where.origin:
        stmt = stmt.where(Facility.code == where.origin)
    if where.modality:  # stored as "CT\\SR": match a whole code
        joined = literal("\\") + Study.modalities + literal("\\")
        stmt = stmt.where(joined.contains(f"\\{where.modality}\\", autoescape=True))
    if where.date_from:
        stmt = stmt.where(Study.study_date >= where.date_from, Study.study_date != "")
    if where.date_to:
        stmt = stmt.where(Study.study_date <= where.date_to, Study.study_date != "")
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(Study.updated_at.desc(), Study.id.desc()).limit(limit).offset(offset)
    )
    found = [
        {
            "study_uid": s.study_uid,
            "facility": code,
            "modalities": s.modalities,
            "study_date": s.study_date,
            "series": s.num_series,
            "instances": s.num_instances,
            "updated_at": s.updated_at.isoformat(),
        }
        for s, code in rows
    ]
    return found, int(total)


def study_instances(session: Session, study_uid: str) -> list[Instance]:
    """All instances of a hub study, whichever member stored it (hub data are shared)."""
    rows = list(
        session.scalars(
            select(Instance)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .where(Study.study_uid == study_uid)
            .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
        )
    )
    if not rows:
        raise NotFound(MISSING)
    return rows


def remove_study(session: Session, study: Study) -> list[str]:
    """Delete a study's index rows; returns the storage paths its instances used."""
    series_ids = list(session.scalars(select(Series.id).where(Series.study_pk == study.id)))
    paths = list(
        session.scalars(select(Instance.storage_path).where(Instance.series_pk.in_(series_ids)))
    )
    session.execute(delete(Instance).where(Instance.series_pk.in_(series_ids)))
    session.execute(delete(Series).where(Series.study_pk == study.id))
    session.execute(delete(Study).where(Study.id == study.id))
    return paths


def delete_files(node: Node, paths: list[str]) -> int:
    """After the commit: delete the files no instance row references any more."""
    if not paths:
        return 0
    with node.db.session() as session:
        used = set(
            session.scalars(select(Instance.storage_path).where(Instance.storage_path.in_(paths)))
        )
    store = content_store(node)
    gone = 0
    for path in set(paths) - used:
        store.delete(path)
        gone += 1
    return gone


def retract(session: Session, actor: Actor, study_uid: str) -> tuple[int, list[str]]:
    """The origin facility's site node or admin withdraws a case from the hub: its rows go,
    a ``study.retracted`` event tells subscribers. Another facility gets 404 (as missing)."""
    study = session.scalar(select(Study).where(Study.study_uid == study_uid).with_for_update())
    if study is None or study.facility_id != actor.facility_id:
        raise NotFound(MISSING)
    authorize(actor, Action.FEED_RETRACT, study.facility_id, missing=MISSING)
    instances = study.num_instances
    paths = remove_study(session, study)
    record(session, actor, "feed.retract", "study", study_uid, detail={"instances": instances})
    record_change(
        session,
        study.facility_id,
        STUDY_RETRACTED,
        study_uid=study_uid,
        payload={"instances_removed": instances},
    )
    return instances, paths


def usage(session: Session, facility_id: int) -> tuple[int, int]:
    n, size = session.execute(
        select(func.count(), func.coalesce(func.sum(Instance.size), 0))
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .where(Study.facility_id == facility_id)
    ).one()
    return int(n), int(size)


def origin_of(session: Session, study_uid: str) -> str:
    """The code of the facility a hub case came from."""
    stmt = select(Facility.code).join(Study, Study.facility_id == Facility.id)
    return session.scalar(stmt.where(Study.study_uid == study_uid)) or ""


def quota_of(session: Session, facility_id: int) -> tuple[int, int]:
    """(max instances, max bytes) that apply to a facility; 0: no limit."""
    rows = session.scalars(
        select(FeedQuota).where(FeedQuota.facility_id.in_((facility_id, DEFAULT_QUOTA)))
    ).all()
    if not rows:
        return 0, 0
    quota = min(rows, key=lambda q: q.facility_id != facility_id)
    return quota.max_instances, quota.max_bytes


def set_default_quota(session: Session, max_instances: int, max_bytes: int) -> None:
    """The hub's start-up: PAIR_HUB_QUOTA_* become the default quota row."""
    row = session.get(FeedQuota, DEFAULT_QUOTA)
    if row is None:
        row = FeedQuota(facility_id=DEFAULT_QUOTA)
        session.add(row)
    row.max_instances, row.max_bytes = max_instances, max_bytes


def set_facility_quota(
    session: Session, actor: Actor, facility_id: int, max_instances: int, max_bytes: int
) -> None:
    """A hub operator's override of the default quota for one facility (0: no limit); audited
    in that facility's log. It applies from the next stored batch on; nothing stored goes."""
    authorize(actor, Action.HUB_MEMBER_MANAGE, None)
    if max_instances < 0 or max_bytes < 0:
        raise Invalid("A quota is a number of instances or bytes, 0 or more (0: no limit).")
    row = session.get(FeedQuota, facility_id)
    before = (row.max_instances, row.max_bytes) if row is not None else None
    if row is None:
        row = FeedQuota(facility_id=facility_id)
        session.add(row)
    row.max_instances, row.max_bytes = max_instances, max_bytes
    detail: dict[str, Any] = {"max_instances": max_instances, "max_bytes": max_bytes}
    if before is not None:
        detail["before"] = {"max_instances": before[0], "max_bytes": before[1]}
    record(
        session, actor, "hub.quota.set", "facility", str(facility_id), detail=detail,
        facility_id=facility_id,
    )  # fmt: skip


def clear_facility_quota(session: Session, actor: Actor, facility_id: int) -> bool:
    """Remove a facility's override: the default quota (PAIR_HUB_QUOTA_*) applies again."""
    authorize(actor, Action.HUB_MEMBER_MANAGE, None)
    row = session.get(FeedQuota, facility_id)
    if row is None:
        return False
    session.delete(row)
    detail = {"before": {"max_instances": row.max_instances, "max_bytes": row.max_bytes}}
    record(
        session, actor, "hub.quota.clear", "facility", str(facility_id), detail=detail,
        facility_id=facility_id,
    )  # fmt: skip
    return True


def has_override(session: Session, facility_id: int) -> bool:
    return session.get(FeedQuota, facility_id) is not None
