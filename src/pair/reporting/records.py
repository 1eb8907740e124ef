"""Report rows: who may see and change them, locking and revision checks, versions.

Users of another facility get 404, as if the report did not exist; a change is checked against
the revision the client loaded and flushed so that a concurrent writer means 409, never a lost
update.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from pair.accounts.models import Role
from pair.audit.service import Actor, record
from pair.core.errors import Conflict, Forbidden, NotFound
from pair.reporting.loader import get_module
from pair.reporting.model import Module
from pair.reporting.models import Report, ReportVersion
from pair.repository.models import Study

EDITORS = (Role.RADIOLOGIST.value, Role.ADMIN.value)


def require_role(actor: Actor, roles: tuple[str, ...], what: str) -> None:
    if actor.role not in roles:
        raise Forbidden(f"Role {actor.role!r} may not {what}; required: {', '.join(roles)}.")


def same_facility(actor: Actor, facility_id: int) -> bool:
    return actor.user_id is None or actor.facility_id == facility_id


def study_for(session: Session, actor: Actor, study_uid: str) -> Study:
    study = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if study is None or not same_facility(actor, study.facility_id):
        raise NotFound(f"No study {study_uid!r} in your facility's repository.")
    return study


def load_report(session: Session, actor: Actor, report_id: int, for_update: bool = False) -> Report:
    """``for_update``: lock the row until the transaction ends (SELECT ... FOR UPDATE on
    PostgreSQL, so concurrent writers of one report queue up and each sees the previous
    one's result; SQLite has no row locks, there the revision check at flush decides)."""
    report = session.get(
        Report, report_id, with_for_update=for_update or None, populate_existing=for_update
    )
    if report is None or not same_facility(actor, report.facility_id):
        raise NotFound(f"No report {report_id}.")
    return report


def for_change(
    session: Session, actor: Actor, report_id: int, expected_revision: int | None
) -> Report:
    """The report, locked, checked against the revision the client loaded."""
    report = load_report(session, actor, report_id, for_update=True)
    if expected_revision is not None and expected_revision != report.revision:
        raise Conflict(
            f"Report {report.id} was changed by someone else since you loaded it (it is at "
            f"revision {report.revision}, you loaded revision {expected_revision}); reload "
            "the report and apply your changes again."
        )
    return report


def save(session: Session, report: Report, at: datetime | None = None) -> None:
    """Flush the change; a concurrent writer that got there first means 409, not a lost update."""
    report.updated_at = at or datetime.now(UTC)  # every change bumps the report's revision
    report_id = report.id  # the object is unusable once a flush failed
    try:
        session.flush()
    except StaleDataError as exc:
        raise Conflict(
            f"Report {report_id} was changed by someone else at the same time; reload the "
            "report and apply your changes again."
        ) from exc


def current(report: Report) -> ReportVersion:
    return report.versions[-1]


def module_of(report: Report) -> Module:
    return get_module(report.module_id, report.module_version)


def editable_draft(report: Report) -> ReportVersion:
    version = current(report)
    if version.status != "draft":
        raise Conflict(
            f"Version {version.version} of report {report.id} is signed and cannot "
            "change; amend the report to create a new version."
        )
    return version


def get_version(report: Report, number: int | None) -> ReportVersion:
    if number is None:
        return current(report)
    found = next((v for v in report.versions if v.version == number), None)
    if found is None:
        raise NotFound(
            f"Report {report.id} has no version {number}; versions: "
            f"{', '.join(str(v.version) for v in report.versions)}."
        )
    return found


def list_reports(session: Session, actor: Actor, study_uid: str | None = None) -> list[Report]:
    stmt = select(Report).order_by(Report.id)
    if actor.user_id is not None:
        stmt = stmt.where(Report.facility_id == actor.facility_id)
    if study_uid:
        stmt = stmt.where(Report.study_uid == study_uid)
    reports = list(session.scalars(stmt))
    record(session, actor, "report.list", "report", "", detail={"count": len(reports)})
    return reports
