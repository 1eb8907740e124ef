"""Hub tables of federated studies: one row per study run, per round, per site and round, and
per cross-site evaluation cell. Only aggregate metrics are stored; no image or case leaves a site.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pair.db.base import Base, TimestampMixin


class FederatedStudy(TimestampMixin, Base):
    """One execution of a study definition (simulator or deployment) and its provenance."""

    __tablename__ = "federated_study"
    __table_args__ = (UniqueConstraint("study_id", "version", "run_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    run_name: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(256), default="")
    use_case: Mapped[str] = mapped_column(String(64))
    strategy: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))  # simulator | deployment
    engine: Mapped[str] = mapped_column(String(64), default="")
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)
    # site name -> hub facility id (who, besides hub roles, may see the study)
    site_facilities: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    rounds_planned: Mapped[int] = mapped_column(Integer)
    rounds_done: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="running")
    final_model_sha256: Mapped[str] = mapped_column(String(64), default="")
    algorithm_id: Mapped[str] = mapped_column(String(64), default="")
    algorithm_version: Mapped[str] = mapped_column(String(64), default="")
    # optional baselines measured outside the federation (benchmark: local-only, pooled)
    baselines: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    rounds: Mapped[list[FederatedRound]] = relationship(
        cascade="all, delete-orphan", order_by="FederatedRound.round"
    )
    site_rounds: Mapped[list[FederatedSiteRound]] = relationship(
        cascade="all, delete-orphan",
        order_by="(FederatedSiteRound.round, FederatedSiteRound.site)",
    )
    cross_site: Mapped[list[FederatedCrossSite]] = relationship(cascade="all, delete-orphan")


class FederatedRound(Base):
    __tablename__ = "federated_round"
    __table_args__ = (UniqueConstraint("study_pk", "round"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("federated_study.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    wall_s: Mapped[float] = mapped_column(Float, default=0.0)
    participants: Mapped[list[str]] = mapped_column(JSON, default=list)
    model_sha256: Mapped[str] = mapped_column(String(64), default="")
    bytes_per_model: Mapped[int] = mapped_column(Integer, default=0)


class FederatedSiteRound(Base):
    """What one site reported for one round (validation metrics of global and local model)."""

    __tablename__ = "federated_site_round"
    __table_args__ = (UniqueConstraint("study_pk", "round", "site"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("federated_study.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(64))
    train_loss: Mapped[float | None] = mapped_column(Float, default=None)
    val_loss: Mapped[float | None] = mapped_column(Float, default=None)
    val_auc: Mapped[float | None] = mapped_column(Float, default=None)
    val_auc_lower: Mapped[float | None] = mapped_column(Float, default=None)
    val_auc_upper: Mapped[float | None] = mapped_column(Float, default=None)
    val_sensitivity: Mapped[float | None] = mapped_column(Float, default=None)
    val_specificity: Mapped[float | None] = mapped_column(Float, default=None)
    global_val_loss: Mapped[float | None] = mapped_column(Float, default=None)
    global_val_auc: Mapped[float | None] = mapped_column(Float, default=None)
    train_samples: Mapped[int] = mapped_column(Integer, default=0)
    val_samples: Mapped[int] = mapped_column(Integer, default=0)
    train_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    bytes_sent: Mapped[int] = mapped_column(Integer, default=0)
    bytes_received: Mapped[int] = mapped_column(Integer, default=0)
    dp_epsilon: Mapped[float | None] = mapped_column(Float, default=None)
    local_model_sha256: Mapped[str] = mapped_column(String(64), default="")
    reported_at: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)


class FederatedCrossSite(Base):
    """Model ``model`` ("global" or a site's local model) evaluated on ``evaluated_on``'s data."""

    __tablename__ = "federated_cross_site"
    __table_args__ = (UniqueConstraint("study_pk", "model", "evaluated_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("federated_study.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(96))
    evaluated_on: Mapped[str] = mapped_column(String(64))
    auc: Mapped[float | None] = mapped_column(Float, default=None)
    auc_lower: Mapped[float | None] = mapped_column(Float, default=None)
    auc_upper: Mapped[float | None] = mapped_column(Float, default=None)
    loss: Mapped[float | None] = mapped_column(Float, default=None)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    note: Mapped[str] = mapped_column(Text, default="")
