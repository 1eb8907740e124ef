"""Sharing tables: hub membership (at the hub), the site's policy, manual shares and outbox, and
the hub's receipts of JSON pushes (idempotency keys).

The outbox is diff-based: ``pair.sharing.outbox.enqueue_pending`` inserts a row for every object
the policy shares that has none yet (unique per facility, kind and object key), so ingest needs
no hook and a restarted node resumes from the table alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pair.db.base import Base, TimestampMixin, utcnow


class MemberStatus:
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVOKED = "revoked"


class HubMember(TimestampMixin, Base):
    """A facility's registration at the hub and, once approved, its facility and credential."""

    __tablename__ = "hub_member"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    contact: Mapped[str] = mapped_column(String(256), default="")
    site_url: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(16), default=MemberStatus.PENDING, index=True)
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("facility.id"), default=None)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"), default=None)
    decided_by: Mapped[str] = mapped_column(String(128), default="")
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class SharingPolicy(Base):
    """What a site facility shares with its hub; no row means ``none`` (opt-in)."""

    __tablename__ = "sharing_policy"

    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), primary_key=True)
    mode: Mapped[str] = mapped_column(String(32), default="none")
    updated_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SharedCase(TimestampMixin, Base):
    """A case shared by hand ("share this case"), whatever the policy."""

    __tablename__ = "sharing_manual_case"
    __table_args__ = (UniqueConstraint("facility_id", "patient_pk", name="uq_sharing_manual_case"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    shared_by: Mapped[str] = mapped_column(String(128), default="")


class OutboxStatus:
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"  # refused by the hub for good (content); an admin may queue it again


class OutboxItem(TimestampMixin, Base):
    """One object to push: kind ``instance`` (SOP Instance UID), ``clinical`` (case and record
    time), ``report`` (report id and version) or ``feedback`` (evaluation run id)."""

    __tablename__ = "sharing_outbox"
    __table_args__ = (
        UniqueConstraint("facility_id", "kind", "object_key", name="uq_sharing_outbox_object"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    object_key: Mapped[str] = mapped_column(String(128))
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_s: Mapped[float] = mapped_column(Float, default=0.0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # what is sent, when it must be byte-identical on every attempt (signed feedback carries
    # its creation time): built once, committed before the first attempt
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class HubReceipt(TimestampMixin, Base):
    """A JSON push the hub has applied, by the sender's idempotency key: a repeat is a no-op."""

    __tablename__ = "hub_receipt"
    __table_args__ = (
        UniqueConstraint("facility_id", "idempotency_key", name="uq_hub_receipt_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    object_ref: Mapped[str] = mapped_column(String(128), default="")
