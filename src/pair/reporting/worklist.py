"""The radiologist's worklist: what is waiting to be reported, drafted, signed or amended.

Four queues over the actor's facility (the same scope as every portal page):

* ``unreported``: image studies with no signed report of any module (SR-only studies are the
  node's own output and are not work);
* ``mine``: drafts the actor created or last edited;
* ``to_sign``: drafts whose required findings are all answered, so a radiologist can sign;
* ``amended``: reports whose current version is an amendment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session, selectinload

from pair.core.errors import Invalid
from pair.reporting.engine import evaluate
from pair.reporting.models import Report, ReportVersion
from pair.reporting.records import EDITORS, module_of
from pair.repository.models import Patient, Study
from pair.web.templating import HomeCard

Queue = Literal["unreported", "mine", "to_sign", "amended"]
QUEUES: dict[str, str] = {
    "unreported": "Studies without a signed report",
    "mine": "My drafts",
    "to_sign": "Ready to sign",
    "amended": "Amended",
}
LIMIT = 200
SIGNED = ("final", "amended")


@dataclass(frozen=True)
class WorkItem:
    study_uid: str
    case_id: int
    pseudonym: str
    study_date: str
    modalities: list[str]
    description: str
    report_id: int | None = None
    module_id: str = ""
    status: str = ""
    updated_at: datetime | None = None


def _not_only_sr(modalities: str) -> bool:
    return any(m and m != "SR" for m in modalities.split("\\"))


def _study_item(study: Study, pseudonym: str, report: Report | None = None) -> WorkItem:
    return WorkItem(
        study_uid=study.study_uid,
        case_id=study.patient_pk,
        pseudonym=pseudonym,
        study_date=study.study_date,
        modalities=[m for m in (study.modalities or "").split("\\") if m],
        description=study.study_description,
        report_id=report.id if report else None,
        module_id=report.module_id if report else "",
        status=report.status if report else "",
        updated_at=report.updated_at if report else None,
    )


def _unreported_query(facility_id: int) -> Select[Study, str]:
    signed = exists().where(
        Report.study_uid == Study.study_uid,
        Report.facility_id == facility_id,
        Report.status.in_(SIGNED),
    )
    return (
        select(Study, Patient.pseudonym)
        .join(Patient, Patient.id == Study.patient_pk)
        .where(Study.facility_id == facility_id, ~signed)
    )


def _reports(session: Session, facility_id: int, condition: Any) -> list[Report]:
    stmt = (
        select(Report)
        .where(Report.facility_id == facility_id, condition)
        .options(selectinload(Report.versions))
        .order_by(Report.updated_at.desc())
        .limit(LIMIT * 5)
    )
    return list(session.scalars(stmt))


def _mine(report: Report, user_id: int | None) -> bool:
    current = next((v for v in report.versions if v.version == report.current_version), None)
    edited = current.edited_by if current is not None else None
    return user_id is not None and user_id in (report.created_by, edited)


def _complete(report: Report) -> bool:
    current = next((v for v in report.versions if v.version == report.current_version), None)
    if current is None:
        return False
    try:
        return evaluate(module_of(report), current.inputs, allow_missing=True).complete
    except Invalid:
        return False


def items(
    session: Session, facility_id: int | None, user_id: int | None, queue: str
) -> list[WorkItem]:
    """One queue of a facility, newest first, at most ``LIMIT`` rows."""
    if queue not in QUEUES:
        raise Invalid(f"Unknown worklist {queue!r}; choose one of: {', '.join(QUEUES)}.")
    if facility_id is None:
        return []
    if queue == "unreported":
        rows = session.execute(
            _unreported_query(facility_id).order_by(Study.study_date.desc(), Study.id.desc())
        ).all()
        return [_study_item(s, p) for s, p in rows if _not_only_sr(s.modalities)][:LIMIT]
    current = select(ReportVersion.status).where(
        ReportVersion.report_id == Report.id, ReportVersion.version == Report.current_version
    )
    if queue == "amended":
        reports = _reports(session, facility_id, current.scalar_subquery() == "amended")
    else:
        drafts = _reports(session, facility_id, current.scalar_subquery() == "draft")
        keep = (lambda r: _mine(r, user_id)) if queue == "mine" else _complete
        reports = [r for r in drafts if keep(r)]
    return _with_studies(session, reports)[:LIMIT]


def _with_studies(session: Session, reports: list[Report]) -> list[WorkItem]:
    uids = {r.study_uid for r in reports}
    if not uids:
        return []
    rows = session.execute(
        select(Study, Patient.pseudonym)
        .join(Patient, Patient.id == Study.patient_pk)
        .where(Study.study_uid.in_(uids))
    ).all()
    by_uid = {s.study_uid: (s, p) for s, p in rows}
    return [_study_item(*by_uid[r.study_uid], r) for r in reports if r.study_uid in by_uid]


def counts(session: Session, facility_id: int | None, user_id: int | None) -> dict[str, int]:
    """How many items wait in each queue (the home page shows them)."""
    if facility_id is None:
        return dict.fromkeys(QUEUES, 0)
    unreported = session.execute(
        _unreported_query(facility_id).with_only_columns(Study.modalities)
    ).scalars()
    out = {"unreported": sum(1 for m in unreported if _not_only_sr(m))}
    for queue in ("mine", "to_sign", "amended"):
        out[queue] = len(items(session, facility_id, user_id, queue))
    return out


def home_cards(session: Session, user: Any) -> list[HomeCard]:
    """The worklist counts on the home page, for those who report (radiologists, admins)."""
    if user.role not in EDITORS:
        return []
    n = counts(session, user.facility_id, user.id)
    return [
        HomeCard(
            QUEUES[q].lower() if q != "unreported" else "studies to report",
            n[q],
            f"/worklist?queue={q}",
            warn=q == "to_sign" and n[q] > 0,
        )
        for q in QUEUES
    ]
