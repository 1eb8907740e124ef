"""Use-case workflow: draft → under_review (comments, revisions) → published → retired.

Every transition is audited in the caller's transaction. Any signed-in user may write a draft,
submit it and comment; only its author revises it; publishing and retiring are checked by the
API (panel role). Each revision is a new version row; the previous one becomes ``superseded``
so reviewers can diff what changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pair.accounts import policy
from pair.accounts.policy import Action
from pair.audit.service import Actor, record
from pair.core.errors import Conflict, Forbidden, Invalid, NotFound
from pair.usecases.models import UseCaseComment, UseCaseStatus, UseCaseVersion
from pair.usecases.spec import UseCase, shipped

SHIPPED_AUTHOR = "PAIR (shipped)"
MAX_COMMENT = 5000
S = UseCaseStatus


@dataclass(frozen=True)
class Listing:
    total: int
    items: list[UseCaseVersion]


def ensure_shipped(session: Session) -> int:
    """Insert the shipped use cases as published where that id/version is missing."""
    added = 0
    for uc in shipped():
        exists = session.scalar(
            select(UseCaseVersion.id).where(
                UseCaseVersion.usecase_id == uc.id, UseCaseVersion.version == uc.version
            )
        )
        if exists is not None:
            continue
        try:
            with session.begin_nested():
                session.add(_row(uc, S.PUBLISHED, SHIPPED_AUTHOR, None))
        except IntegrityError:  # another process loaded it at the same moment
            continue
        record(session, Actor.system("startup"), "usecase.load_shipped", "usecase", uc.ref)
        added += 1
    return added


def _row(uc: UseCase, status: str, author: str, facility_id: int | None) -> UseCaseVersion:
    return UseCaseVersion(
        usecase_id=uc.id,
        version=uc.version,
        title=uc.title,
        status=status,
        document=uc.document,
        author=author,
        author_facility_id=facility_id,
    )


def list_usecases(
    session: Session,
    text: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Listing:
    """The newest version of each use case, filtered by status and a text search."""
    newest = (
        select(UseCaseVersion.usecase_id, func.max(UseCaseVersion.version).label("v"))
        .group_by(UseCaseVersion.usecase_id)
        .subquery()
    )
    q = select(UseCaseVersion).join(
        newest,
        (UseCaseVersion.usecase_id == newest.c.usecase_id) & (UseCaseVersion.version == newest.c.v),
    )
    if status:
        allowed = (S.DRAFT, S.UNDER_REVIEW, S.PUBLISHED, S.RETIRED)
        if status not in allowed:
            raise Invalid(f"Unknown status {status!r}; allowed: {', '.join(allowed)}.")
        q = q.where(UseCaseVersion.status == status)
    if text:
        like = f"%{text.lower()}%"
        q = q.where(
            or_(
                func.lower(UseCaseVersion.title).like(like),
                func.lower(UseCaseVersion.usecase_id).like(like),
            )
        )
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = session.scalars(q.order_by(UseCaseVersion.usecase_id).limit(limit).offset(offset))
    return Listing(total, list(rows))


def get(session: Session, usecase_id: str, version: int | None = None) -> UseCaseVersion:
    q = select(UseCaseVersion).where(UseCaseVersion.usecase_id == usecase_id)
    if version is not None:
        q = q.where(UseCaseVersion.version == version)
    row = session.scalars(q.order_by(UseCaseVersion.version.desc()).limit(1)).first()
    if row is None:
        what = f"version {version} of use case" if version is not None else "use case"
        raise NotFound(f"No {what} {usecase_id!r}.")
    return row


def versions(session: Session, usecase_id: str) -> list[UseCaseVersion]:
    rows = list(
        session.scalars(
            select(UseCaseVersion)
            .where(UseCaseVersion.usecase_id == usecase_id)
            .order_by(UseCaseVersion.version)
        )
    )
    if not rows:
        raise NotFound(f"No use case {usecase_id!r}.")
    return rows


def comments(session: Session, usecase_id: str) -> list[tuple[int, UseCaseComment]]:
    rows = session.execute(
        select(UseCaseVersion.version, UseCaseComment)
        .join(UseCaseComment, UseCaseComment.version_pk == UseCaseVersion.id)
        .where(UseCaseVersion.usecase_id == usecase_id)
        .order_by(UseCaseComment.id)
    )
    return [(v, c) for v, c in rows]


def _validated(document: Any, version: int) -> UseCase:
    if not isinstance(document, dict):
        raise Invalid("A use case is a JSON object with the Define-AI sections.")
    doc = dict(document)
    overview = doc.get("overview")
    if isinstance(overview, dict):
        doc["overview"] = {**overview, "version": version}
    return UseCase.from_dict(doc)


def _flush(session: Session, uc: UseCase) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"Use case {uc.id} version {uc.version} was written concurrently.") from exc


def create_draft(session: Session, actor: Actor, document: Any) -> UseCaseVersion:
    uc = _validated(document, 1)
    if session.scalar(select(UseCaseVersion.id).where(UseCaseVersion.usecase_id == uc.id)):
        raise Conflict(f"Use case {uc.id} exists; revise it instead of creating it again.")
    row = _row(uc, S.DRAFT, actor.user_name, actor.facility_id)
    session.add(row)
    _flush(session, uc)
    record(session, actor, "usecase.create", "usecase", uc.ref)
    return row


def _own(row: UseCaseVersion, actor: Actor, what: str) -> None:
    if row.author != actor.user_name and actor.role != "admin":
        raise Forbidden(f"Only the author of {row.usecase_id} ({row.author}) may {what} it.")


def _expect(row: UseCaseVersion, *statuses: str) -> None:
    if row.status not in statuses:
        raise Conflict(
            f"Use case {row.usecase_id} version {row.version} is {row.status}; "
            f"this needs status {' or '.join(statuses)}."
        )


def revise(session: Session, actor: Actor, usecase_id: str, document: Any) -> UseCaseVersion:
    """A new version from the author; the previous one is kept as ``superseded``."""
    current = get(session, usecase_id)
    _own(current, actor, "revise")
    _expect(current, S.DRAFT, S.UNDER_REVIEW)
    uc = _validated(document, current.version + 1)
    if uc.id != usecase_id:
        raise Invalid(f"overview/id: {uc.id!r} differs from the use case revised ({usecase_id}).")
    row = _row(uc, current.status, actor.user_name, actor.facility_id)
    current.status = S.SUPERSEDED
    session.add(row)
    _flush(session, uc)
    record(session, actor, "usecase.revise", "usecase", uc.ref, detail={"from": current.version})
    return row


def _transition(
    session: Session, actor: Actor, usecase_id: str, src: tuple[str, ...], dst: str, action: str
) -> UseCaseVersion:
    row = get(session, usecase_id)
    _expect(row, *src)
    detail = {"from": row.status, "to": dst}
    row.status = dst
    session.flush()
    record(session, actor, action, "usecase", f"{row.usecase_id}@{row.version}", detail=detail)
    return row


def submit(session: Session, actor: Actor, usecase_id: str) -> UseCaseVersion:
    _own(get(session, usecase_id), actor, "submit")
    return _transition(session, actor, usecase_id, (S.DRAFT,), S.UNDER_REVIEW, "usecase.submit")


def publish(session: Session, actor: Actor, usecase_id: str) -> UseCaseVersion:
    """Publish the version under review; an earlier published version is superseded."""
    policy.check_role(actor, Action.USECASE_PUBLISH)
    for old in versions(session, usecase_id):
        if old.status == S.PUBLISHED:
            old.status = S.SUPERSEDED
    return _transition(
        session, actor, usecase_id, (S.UNDER_REVIEW,), S.PUBLISHED, "usecase.publish"
    )


def retire(session: Session, actor: Actor, usecase_id: str) -> UseCaseVersion:
    policy.check_role(actor, Action.USECASE_PUBLISH)
    return _transition(session, actor, usecase_id, (S.PUBLISHED,), S.RETIRED, "usecase.retire")


def comment(session: Session, actor: Actor, usecase_id: str, text: str) -> UseCaseComment:
    """A comment on the newest version, while it is a draft or under review."""
    text = text.strip()
    if not text or len(text) > MAX_COMMENT:
        raise Invalid(f"A comment has 1 to {MAX_COMMENT} characters.")
    row = get(session, usecase_id)
    _expect(row, S.DRAFT, S.UNDER_REVIEW)
    c = UseCaseComment(version_pk=row.id, author=actor.user_name, text=text)
    session.add(c)
    session.flush()
    record(session, actor, "usecase.comment", "usecase", f"{row.usecase_id}@{row.version}")
    return c


def in_force(session: Session, usecase_id: str) -> UseCase | None:
    """The published version of ``usecase_id``; None when none was ever published.

    Drafts and use cases under review do not bind algorithms: otherwise any signed-in user could
    block an algorithm's submissions by drafting a use case under its ``use_case_id``. A retired
    use case refuses new packages.
    """
    ensure_shipped(session)
    rows = versions(session, usecase_id) if _exists(session, usecase_id) else []
    published = [r for r in rows if r.status == S.PUBLISHED]
    if published:
        row = published[-1]
        return UseCase.from_dict(row.document, f"{usecase_id}@{row.version}")
    if any(r.status == S.RETIRED for r in rows):
        raise Invalid(
            f"use_case_id: use case {usecase_id} is retired; declare a use case in force."
        )
    return None


def _exists(session: Session, usecase_id: str) -> bool:
    q = select(UseCaseVersion.id).where(UseCaseVersion.usecase_id == usecase_id).limit(1)
    return session.scalar(q) is not None
