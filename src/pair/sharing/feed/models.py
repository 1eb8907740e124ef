"""Tables of the hub's webhooks (hub side) and of a subscriber's cursor and pulled cases (site
side). The event log itself is ``pair.audit.feedlog`` (written by the repository)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pair.db.base import Base, TimestampMixin, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


class FeedWebhook(TimestampMixin, Base):
    """A facility's subscription: every feed event is POSTed to ``url``, signed with ``secret``.
    ``cursor``: the last sequence number already queued as deliveries."""

    __tablename__ = "feed_webhook"

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    url: Mapped[str] = mapped_column(String(512))
    secret: Mapped[str] = mapped_column(String(128))  # shared HMAC key: must be kept to sign
    active: Mapped[bool] = mapped_column(default=True)
    cursor: Mapped[int] = mapped_column(BigId, default=0)
    created_by: Mapped[str] = mapped_column(String(128), default="")


class FeedDelivery(TimestampMixin, Base):
    """One event to one webhook: the delivery log and the worker's queue (state in the DB, so a
    restarted or second worker process carries on)."""

    __tablename__ = "feed_delivery"
    __table_args__ = (
        UniqueConstraint("webhook_id", "seq", name="uq_feed_delivery_webhook_seq"),
        Index("ix_feed_delivery_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("feed_webhook.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigId)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # delivered, failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_status: Mapped[int | None] = mapped_column(default=None)
    last_error: Mapped[str] = mapped_column(String(256), default="")
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class FeedCursor(Base):
    """Subscriber side: the last hub sequence number processed (one row per hub URL)."""

    __tablename__ = "feed_cursor"

    id: Mapped[int] = mapped_column(primary_key=True)
    hub_url: Mapped[str] = mapped_column(String(512), unique=True)
    last_seq: Mapped[int] = mapped_column(BigId, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FeedOrigin(Base):
    """Subscriber side: a case pulled from the hub, with its origin (the hub's facility code)
    and the UID it has here (the local ingest de-identifies again and may remap UIDs)."""

    __tablename__ = "feed_origin"

    id: Mapped[int] = mapped_column(primary_key=True)
    hub_url: Mapped[str] = mapped_column(String(512))
    hub_study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    local_study_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    origin_facility: Mapped[str] = mapped_column(String(16))
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    seq: Mapped[int] = mapped_column(BigId, default=0)
    instances: Mapped[int] = mapped_column(default=0)
    pulled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
