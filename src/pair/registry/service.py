"""Registry reads at the hub: counts first, then a paged drill-down; DICOM-download approvals.

Every function reads de-identified tables only (pseudonyms, shifted dates, hub UIDs); the
site-private re-identification mapping is never touched. Queries are audited with their size,
not their criteria.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility, Role, User
from pair.accounts.policy import Action, check_role
from pair.audit.service import Actor, record
from pair.core.errors import Forbidden, Invalid, NotFound
from pair.registry.cohort import CohortQuery, CohortStudy, select_studies
from pair.registry.models import RegistryApproval

MAX_PAGE = 500


@dataclass
class SiteCount:
    """Sites are named by their consortium code in aggregated views (open to every member
    facility's users), not by the facility's name."""

    code: str
    studies: int
    patients: int


@dataclass
class CohortCounts:
    studies: int
    patients: int
    by_site: list[SiteCount]
    by_modality: dict[str, int]
    by_category: dict[str, int]  # "module: category"

    def to_dict(self) -> dict[str, Any]:
        return {
            "studies": self.studies,
            "patients": self.patients,
            "by_site": [vars(s) for s in self.by_site],
            "by_modality": self.by_modality,
            "by_category": self.by_category,
        }


def counts_of(session: Session, studies: list[CohortStudy]) -> CohortCounts:
    """Totals and breakdowns; every member site is listed, with 0 where it has no study."""
    per_site: dict[int, list[CohortStudy]] = {}
    for s in studies:
        per_site.setdefault(s.facility_id, []).append(s)
    by_site = [
        SiteCount(
            f.code,
            len(per_site.get(f.id, [])),
            len({s.patient_pk for s in per_site.get(f.id, [])}),
        )
        for f in session.scalars(select(Facility).order_by(Facility.code))
    ]
    modality = Counter(m for s in studies for m in s.modalities)
    category = Counter(f"{m}: {c}" for s in studies for m, c in s.categories.items())
    return CohortCounts(
        studies=len(studies),
        patients=len({s.patient_pk for s in studies}),
        by_site=by_site,
        by_modality=dict(sorted(modality.items())),
        by_category=dict(sorted(category.items())),
    )


def cohort_counts(session: Session, actor: Actor, q: CohortQuery) -> CohortCounts:
    """Aggregates only (every registry reader, facility users included)."""
    check_role(actor, Action.REGISTRY_VIEW)
    counts = counts_of(session, select_studies(session, q))
    record(session, actor, "registry.count", "registry", "", detail={"studies": counts.studies})
    return counts


def study_row(s: CohortStudy) -> dict[str, Any]:
    """The drill-down / export row of one study (de-identified values only)."""
    return {
        "study_uid": s.study_uid,
        "pseudonym": s.pseudonym,
        "site": s.site,
        "study_date": s.study_date,
        "submitted_at": s.submitted_at.astimezone(UTC).isoformat()
        if s.submitted_at.tzinfo
        else s.submitted_at.replace(tzinfo=UTC).isoformat(),
        "modalities": ",".join(s.modalities),
        "categories": "; ".join(f"{m}: {c}" for m, c in sorted(s.categories.items())),
        **{f"clinical_{k}": v for k, v in s.clinical.items()},
    }


@dataclass
class StudyPage:
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]


def cohort_studies(
    session: Session, actor: Actor, q: CohortQuery, *, limit: int = 50, offset: int = 0
) -> StudyPage:
    """The drill-down: one page of the cohort's studies (registry analysts, hub operator)."""
    check_role(actor, Action.REGISTRY_QUERY)
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise Invalid(f"limit must be 1-{MAX_PAGE} and offset ≥ 0.")
    studies = select_studies(session, q)
    record(session, actor, "registry.query", "registry", "", detail={"studies": len(studies)})
    return StudyPage(
        len(studies), limit, offset, [study_row(s) for s in studies[offset : offset + limit]]
    )


# ---- approvals for DICOM download ---------------------------------------------------------


def _user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"No user {name!r}.")
    return user


def approve(session: Session, actor: Actor, user_name: str, note: str = "") -> RegistryApproval:
    """The hub operator approves an analyst or researcher for DICOM download."""
    check_role(actor, Action.REGISTRY_APPROVE)
    user = _user(session, user_name)
    if user.role not in (Role.REGISTRY_ANALYST.value, Role.RESEARCHER.value):
        raise Invalid(
            f"{user_name} is a {user.role}; only registry analysts and researchers can be "
            "approved for DICOM download."
        )
    row = session.scalar(select(RegistryApproval).where(RegistryApproval.user_id == user.id))
    if row is None:
        row = RegistryApproval(user_id=user.id, approved_by=actor.user_name)
        session.add(row)
    row.approved_by, row.note = actor.user_name, note
    row.approved_at, row.revoked_at = datetime.now(UTC), None
    session.flush()
    record(
        session,
        actor,
        "registry.approve",
        "user",
        str(user.id),
        facility_id=user.facility_id,
        detail={"user": user.name},
    )
    return row


def revoke(session: Session, actor: Actor, user_name: str) -> None:
    check_role(actor, Action.REGISTRY_APPROVE)
    user = _user(session, user_name)
    row = session.scalar(select(RegistryApproval).where(RegistryApproval.user_id == user.id))
    if row is None or row.revoked_at is not None:
        raise NotFound(f"{user_name} holds no registry approval.")
    row.revoked_at = datetime.now(UTC)
    record(
        session,
        actor,
        "registry.revoke",
        "user",
        str(user.id),
        facility_id=user.facility_id,
        detail={"user": user.name},
    )


def approvals(session: Session) -> list[tuple[str, RegistryApproval]]:
    return [
        (name, row)
        for row, name in session.execute(
            select(RegistryApproval, User.name)
            .join(User, User.id == RegistryApproval.user_id)
            .order_by(User.name)
        )
    ]


def is_approved(session: Session, actor: Actor) -> bool:
    if actor.user_id is None:
        return actor.role == Role.ADMIN.value  # the local command line (system actor)
    row = session.scalar(select(RegistryApproval).where(RegistryApproval.user_id == actor.user_id))
    return row is not None and row.revoked_at is None


def check_dicom_download(session: Session, actor: Actor) -> None:
    """Role first (403), then the hub operator's approval (403 naming how to get one)."""
    check_role(actor, Action.REGISTRY_DICOM)
    if not is_approved(session, actor):
        raise Forbidden(
            "DICOM download needs the hub operator's approval (pair registry approve USER)."
        )
