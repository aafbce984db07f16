"""ORM models of the study store (SQLAlchemy 2). Pydantic schemas live in service/api/schemas.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from service.domain.spec import ResolvedSpec, load_spec


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "rf_studies"
    # An idempotency key is per owner: the pair is unique, never a joined string (migration 0009;
    # "alice" + "bob:k1" and "alice:bob" + "k1" were one string before).
    __table_args__ = (Index("uq_study_idempotency", "owner", "idempotency_key", unique=True),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    stage_spaces: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The user who submitted it (migration 0006); None: from before tokens (admins only see it).
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    # The suite it belongs to (migration 0010); None: a study submitted on its own.
    suite_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    @property
    def resolved(self) -> ResolvedSpec:
        """The stored spec, typed (every default was filled when it was stored)."""
        cached = self.__dict__.get("_resolved")
        if cached is None or cached[0] is not self.spec:
            cached = (self.spec, load_spec(self.spec))
            self.__dict__["_resolved"] = cached
        return cached[1]
    trials: Mapped[list[Trial]] = relationship(back_populates="study",
                                               cascade="all, delete-orphan")


class Suite(Base):
    """One submission over several workloads (migration 0010): its studies are ordinary studies
    that carry its id; its status is derived from theirs."""

    __tablename__ = "rf_suites"
    # Per owner, as for studies: the pair is unique (user names may contain ":").
    __table_args__ = (Index("uq_suite_idempotency", "owner", "idempotency_key", unique=True),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Trial(Base):
    __tablename__ = "rf_trials"
    __table_args__ = (
        UniqueConstraint("study_id", "optimizer", "stage", "index", name="uq_trial_position"),
        Index("ix_trial_study_status", "study_id", "status"),
        # The ranking behind best-so-far, /best and /export (migration 0002).
        Index("ix_trial_rank", "study_id", "optimizer", "status", "objective"),
        Index("ix_trial_claim", "claim"),  # the runner's claim lookups (migration 0013)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("rf_studies.id", ondelete="CASCADE"))
    optimizer: Mapped[str] = mapped_column(String(40))
    stage: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    objective: Mapped[float | None] = mapped_column(nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The directory of the trial's last per-epoch checkpoint: a trial interrupted by a controller
    # death resumes from it (migration 0004).
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)  # times it was started
    # The training seed (migration 0007): the study's seed for search trials, a fresh one each
    # for the seed re-runs of the best configuration. None: from before seeds were stored.
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    epochs: Mapped[int] = mapped_column(Integer, default=0)  # the last epoch it reported (migration 0008)
    # An external study's trial (execution: external) is claimed by a client under a lease
    # (migration 0011): the claim's token, which every report of the claimant carries, and when the
    # claim lapses unless a report renews it. The token stays after the trial ends (idempotent retries).
    claim_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The runner's claim (migration 0012): set when it hands the trial to Tune, while the trial stays
    # `pending` until its worker starts it; a retried claim with the same id finds the same trial.
    claim: Mapped[str | None] = mapped_column(String(36), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    study: Mapped[Study] = relationship(back_populates="trials")
    reports: Mapped[list[Report]] = relationship(back_populates="trial", cascade="all, delete-orphan",
                                                 order_by="Report.epoch", lazy="raise")

    @property
    def attempts(self) -> int:
        """How often the trial was started (claimed): a claim that expired and was claimed again
        counts twice."""
        return self.runs or 0


class Report(Base):
    """One per-epoch report of a trial: rows, not a JSON list rewritten at every epoch (that was
    quadratic in epochs). At most one row per (trial, epoch): a report repeated after a restart is
    dropped, so no epoch appears twice."""

    __tablename__ = "rf_reports"
    __table_args__ = (UniqueConstraint("trial_id", "epoch", name="uq_report_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("rf_trials.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    row: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    trial: Mapped[Trial] = relationship(back_populates="reports")


class ClusterRecord(Base):
    """What the runner last saw of the Ray cluster (nodes, total and available resources), so
    the API can answer `GET /cluster` and check a study's feasibility without a Ray connection."""

    __tablename__ = "rf_cluster"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Lease(Base):
    """The runner lease (service/store/lease.py): which controller runs trials, until when, and the
    fencing token every runner write checks."""

    __tablename__ = "rf_lease"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    token: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """An API token: only its SHA-256 is stored; the token itself is shown once, at creation."""

    __tablename__ = "rf_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(100), index=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEntry(Base):
    """One state change: who did what to which, from where."""

    __tablename__ = "rf_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40), index=True)
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    client: Mapped[str | None] = mapped_column(String(100), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
