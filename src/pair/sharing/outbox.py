"""The site's outbox: which objects a facility's sharing policy sends to the hub, queued by diff.

``enqueue_pending`` compares what the policy shares with what the outbox already holds (unique
per facility, kind and object key) and adds the difference, so ingest, clinical edits, report
signing and evaluation runs need no hook. Only indexed instances are candidates: anything the
PHI scanner quarantined has no ``instance`` row and never reaches the outbox.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.accounts.policy import Action, authorize, scope
from pair.audit.service import Actor, record
from pair.clinical.models import ClinicalRecord
from pair.core.errors import Invalid, NotFound
from pair.evaluation.runs.models import EvaluationRun, RunStatus
from pair.reporting.models import Report, ReportVersion
from pair.repository.models import Instance, Patient, Series, Study
from pair.sharing.models import OutboxItem, OutboxStatus, SharedCase, SharingPolicy

KINDS = ("instance", "clinical", "report", "feedback")  # push order: images before what cites them
FINAL = ("final", "amended")


@cache
def policy_modes() -> dict[str, Any]:
    text = (resources.files("pair.sharing") / "data" / "policies.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def get_policy(session: Session, facility_id: int) -> str:
    row = session.get(SharingPolicy, facility_id)
    return row.mode if row is not None else str(policy_modes()["default"])


def set_policy(session: Session, actor: Actor, mode: str, facility_id: int | None = None) -> str:
    """The facility admin opts in (or out); audited. Already queued items stay queued."""
    facility_id = actor.facility_id if facility_id is None else facility_id
    authorize(actor, Action.SHARING_POLICY_SET, facility_id, missing="No such facility.")
    assert facility_id is not None
    modes = policy_modes()["modes"]
    if mode not in modes:
        raise Invalid(f"Unknown sharing policy {mode!r}; one of: {', '.join(modes)}.")
    row = session.get(SharingPolicy, facility_id)
    before = row.mode if row is not None else str(policy_modes()["default"])
    if row is None:
        row = SharingPolicy(facility_id=facility_id)
        session.add(row)
    row.mode, row.updated_by, row.updated_at = mode, actor.user_name, datetime.now(UTC)
    session.flush()
    record(
        session,
        actor,
        "sharing.policy",
        "facility",
        str(facility_id),
        detail={"from": before, "to": mode},
        facility_id=facility_id,
    )
    return mode


def share_case(session: Session, actor: Actor, case_id: int) -> dict[str, int]:
    """ "Share this case": the case goes to the hub whatever the policy (audited)."""
    patient = session.get(Patient, case_id)
    missing = f"No case {case_id} in your facility."
    if patient is None:
        raise NotFound(missing)
    authorize(actor, Action.SHARING_CASE, patient.facility_id, missing=missing)
    exists = session.scalar(
        select(SharedCase.id).where(
            SharedCase.facility_id == patient.facility_id, SharedCase.patient_pk == patient.id
        )
    )
    if exists is None:
        session.add(
            SharedCase(
                facility_id=patient.facility_id, patient_pk=patient.id, shared_by=actor.user_name
            )
        )
        session.flush()
        record(session, actor, "sharing.case", "case", str(patient.id))
    return enqueue_pending(session, patient.facility_id)


def _matches(data: dict[str, Any], conditions: dict[str, Any]) -> bool:
    return all(data.get(name) == value for name, value in conditions.items())


def shared_cases(session: Session, facility_id: int) -> set[int]:
    """Patient ids the facility's policy and manual shares send to the hub."""
    mode = get_policy(session, facility_id)
    cases = set(
        session.scalars(select(SharedCase.patient_pk).where(SharedCase.facility_id == facility_id))
    )
    if mode == "all":
        cases |= set(session.scalars(select(Patient.id).where(Patient.facility_id == facility_id)))
    elif mode == "reported":
        cases |= set(
            session.scalars(
                select(Study.patient_pk)
                .join(Report, Report.study_uid == Study.study_uid)
                .where(Study.facility_id == facility_id, Report.status.in_(FINAL))
            )
        )
    elif mode in policy_modes()["modes"] and policy_modes()["modes"][mode].get("clinical"):
        conditions = policy_modes()["modes"][mode]["clinical"]
        rows = session.execute(
            select(ClinicalRecord.patient_pk, ClinicalRecord.data).where(
                ClinicalRecord.facility_id == facility_id
            )
        )
        cases |= {pk for pk, data in rows if _matches(data or {}, conditions)}
    return cases


def _candidates(session: Session, facility_id: int, cases: set[int]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {kind: set() for kind in KINDS}
    # aggregate evaluation feedback (no case data) goes once the facility shares at all
    found["feedback"] |= {
        str(run_id)
        for run_id in session.scalars(
            select(EvaluationRun.id).where(
                EvaluationRun.facility_id == facility_id, EvaluationRun.status == RunStatus.DONE
            )
        )
    }
    ids = sorted(cases)
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        found["instance"] |= set(
            session.scalars(
                select(Instance.sop_instance_uid)
                .join(Series, Instance.series_pk == Series.id)
                .join(Study, Series.study_pk == Study.id)
                # a case pulled from the hub's feed is not shareable: never sent back (echo)
                .where(
                    Study.facility_id == facility_id,
                    Study.patient_pk.in_(chunk),
                    Study.shareable.is_(True),
                )
            )
        )
        for pk, at in session.execute(
            select(ClinicalRecord.patient_pk, ClinicalRecord.updated_at).where(
                ClinicalRecord.facility_id == facility_id, ClinicalRecord.patient_pk.in_(chunk)
            )
        ):
            found["clinical"].add(f"{pk}@{_stamp(at)}")
        for report_id, version in session.execute(
            select(Report.id, ReportVersion.version)
            .join(ReportVersion, ReportVersion.report_id == Report.id)
            .join(Study, Study.study_uid == Report.study_uid)
            .where(
                Report.facility_id == facility_id,
                Study.patient_pk.in_(chunk),
                Study.shareable.is_(True),
                ReportVersion.status.in_(FINAL),
            )
        ):
            found["report"].add(f"{report_id}v{version}")
    return found


def _stamp(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%S%f")


def enqueue_pending(session: Session, facility_id: int) -> dict[str, int]:
    """Queue what the policy shares and the outbox lacks; returns the count added per kind."""
    cases = shared_cases(session, facility_id)
    candidates = _candidates(session, facility_id, cases)
    added: dict[str, int] = {}
    for kind, keys in candidates.items():
        if kind == "feedback" and get_policy(session, facility_id) == "none":
            keys = set()
        known = set(
            session.scalars(
                select(OutboxItem.object_key).where(
                    OutboxItem.facility_id == facility_id, OutboxItem.kind == kind
                )
            )
        )
        new = sorted(keys - known)
        for key in new:
            session.add(
                OutboxItem(
                    facility_id=facility_id,
                    kind=kind,
                    object_key=key,
                    idempotency_key=uuid.uuid4().hex,
                )
            )
        added[kind] = len(new)
    session.flush()
    return added


def retry_failed(session: Session, actor: Actor) -> int:
    """Queue the facility's failed items again (after the cause was fixed); audited."""
    facility_id = actor.facility_id
    authorize(actor, Action.SHARING_POLICY_SET, facility_id, missing="No such facility.")
    items = list(
        session.scalars(
            select(OutboxItem).where(
                OutboxItem.facility_id == facility_id, OutboxItem.status == OutboxStatus.FAILED
            )
        )
    )
    for item in items:
        item.status, item.attempts, item.next_attempt_s = OutboxStatus.QUEUED, 0, 0.0
    record(session, actor, "sharing.retry", "facility", str(facility_id), detail={"n": len(items)})
    return len(items)


@dataclass(frozen=True)
class SharingStatus:
    policy: str
    counts: dict[str, dict[str, int]]  # kind -> status -> n
    last_error: str
    items: list[OutboxItem]

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "counts": self.counts,
            "last_error": self.last_error,
            "items": [item_json(i) for i in self.items],
        }


def item_json(item: OutboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "object_key": item.object_key,
        "status": item.status,
        "attempts": item.attempts,
        "last_error": item.last_error,
        "sent_at": item.sent_at.isoformat() if item.sent_at else None,
    }


def sharing_status(
    session: Session, actor: Actor, *, facility_id: int | None = None, limit: int = 100
) -> SharingStatus:
    """Policy, counts per kind and status, the last error and the latest items."""
    if facility_id is None:
        facility_id = scope(actor, Action.SHARING_STATUS)
        if facility_id is None:
            raise Invalid("Name the facility whose outbox to show.")
    else:
        authorize(actor, Action.SHARING_STATUS, facility_id, missing="No such facility.")
    counts: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
    for kind, status, n in session.execute(
        select(OutboxItem.kind, OutboxItem.status, func.count())
        .where(OutboxItem.facility_id == facility_id)
        .group_by(OutboxItem.kind, OutboxItem.status)
    ):
        counts.setdefault(kind, {})[status] = int(n)
    last = session.scalar(
        select(OutboxItem.last_error)
        .where(
            OutboxItem.facility_id == facility_id,
            OutboxItem.last_error != "",
            OutboxItem.status != OutboxStatus.SENT,
        )
        .order_by(OutboxItem.id.desc())
        .limit(1)
    )
    items = list(
        session.scalars(
            select(OutboxItem)
            .where(OutboxItem.facility_id == facility_id)
            .order_by(OutboxItem.id.desc())
            .limit(max(1, min(limit, 1000)))
        )
    )
    return SharingStatus(get_policy(session, facility_id), counts, last or "", items)
