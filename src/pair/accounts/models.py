"""Account tables. Every user belongs to one facility; tokens are stored hashed."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pair.db.base import Base, TimestampMixin


class Role(enum.StrEnum):
    ADMIN = "admin"
    DATA_MANAGER = "data-manager"
    RADIOLOGIST = "radiologist"
    EVALUATOR = "evaluator"
    RESEARCHER = "researcher"
    # node-wide administration, granted only from the command line (see accounts.policy)
    NODE_OPERATOR = "node-operator"
    PANEL = "panel"  # use-case panel member: publishes and retires AI use cases
    # consortium roles at the hub (see docs/hub.md): the hub operator approves member facilities
    # and issues/revokes their site credentials (granted only from the command line, like the
    # node operator); a site node is the service account a member site's PAIR node pushes and
    # pulls with; a registry analyst queries the national registry (counts, cohorts, exports)
    HUB_OPERATOR = "hub-operator"
    SITE_NODE = "site-node"
    REGISTRY_ANALYST = "registry-analyst"


class Facility(TimestampMixin, Base):
    __tablename__ = "facility"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    deid_profile: Mapped[str | None] = mapped_column(Text, default=None)

    users: Mapped[list[User]] = relationship(back_populates="facility")


class User(TimestampMixin, Base):
    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str | None] = mapped_column(String(256), default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    facility: Mapped[Facility] = relationship(back_populates="users", lazy="joined")


class ApiToken(TimestampMixin, Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    user: Mapped[User] = relationship(lazy="joined")


class AeTitle(TimestampMixin, Base):
    """A DICOM peer allowed to associate; what it sends belongs to ``facility``."""

    __tablename__ = "ae_title"

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")

    facility: Mapped[Facility] = relationship(lazy="joined")


class WebSession(Base):
    """A portal sign-in, held on the server: the cookie carries only a random id, whose SHA-256
    is ``token_hash``. Deleting the row (sign-out, forced sign-out, password change) ends it
    even for a copied cookie. Times are Unix seconds (comparable on every database)."""

    __tablename__ = "web_session"
    __table_args__ = {"sqlite_autoincrement": True}  # an ended session's id is never reused

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), index=True, default=None)
    data: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    created_s: Mapped[float] = mapped_column(Float)
    last_seen_s: Mapped[float] = mapped_column(Float)
    expires_s: Mapped[float] = mapped_column(Float, index=True)  # absolute end
    address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(256), default="")

    user: Mapped[User | None] = relationship(lazy="joined")


class LoginThrottle(Base):
    """Failed sign-ins per account (``user:<sha256 of the name>``) or per client address
    (``addr:<address>``), shared by every process of the node."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_s: Mapped[float] = mapped_column(Float, default=0.0)
    locked_until_s: Mapped[float] = mapped_column(Float, default=0.0)
