"""Use-case tables: one row per version of a use case, and review comments.

Use cases are node-wide documents (a panel writes them for every facility, like the CDE catalog),
so rows carry no ``facility_id``; authorship records the user name and facility of the author.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pair.db.base import Base, TimestampMixin


class UseCaseStatus:
    DRAFT = "draft"
    UNDER_REVIEW = "under_review"
    PUBLISHED = "published"
    RETIRED = "retired"
    SUPERSEDED = "superseded"  # an older version after the author revised it


class UseCaseVersion(TimestampMixin, Base):
    __tablename__ = "usecase_version"
    __table_args__ = (UniqueConstraint("usecase_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    usecase_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    author: Mapped[str] = mapped_column(String(128))
    author_facility_id: Mapped[int | None] = mapped_column(ForeignKey("facility.id"), default=None)


class UseCaseComment(TimestampMixin, Base):
    __tablename__ = "usecase_comment"

    id: Mapped[int] = mapped_column(primary_key=True)
    version_pk: Mapped[int] = mapped_column(ForeignKey("usecase_version.id"), index=True)
    author: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
