"""Admission and claim locks: what makes a count and the write that follows it one decision when
several controllers or requests race (an owner's quota of active studies, a study's cap on
concurrently claimed external trials)."""

from __future__ import annotations

import hashlib

from sqlalchemy import false, func, select, text, update
from sqlalchemy.orm import Session

from service.statuses import ACTIVE
from service.store.models import Study


class QuotaExceeded(RuntimeError):
    """The owner already has `active` queued or running studies, the limit is `limit`."""

    def __init__(self, active: int, limit: int):
        super().__init__(f"{active} active studies, the limit is {limit}")
        self.active, self.limit = active, limit


ADMISSION_LOCK = 0x7266  # the namespace of the per-owner advisory locks on PostgreSQL ("rf")


def lock_owner(s: Session, owner: str | None) -> None:
    """Serialises one owner's admissions until the session's transaction ends: PostgreSQL takes a
    transaction-scoped advisory lock on a hash of the name (other owners are not held up); SQLite
    has one writer anyway and takes its write lock now (BEGIN IMMEDIATE), so the count that
    follows sees every study committed before it."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256((owner or "").encode()).digest()
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                     {"ns": ADMISSION_LOCK, "key": int.from_bytes(digest[:4], "big", signed=True)})
    elif conn.dialect.name == "sqlite":
        if not conn.connection.driver_connection.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:  # a transaction is already open (deferred): its first write takes the write lock
            conn.execute(update(Study).where(false()).values(status=Study.status))


CLAIM_LOCK = 0x7263  # the namespace of the per-study claim locks on PostgreSQL


def lock_study_claims(s: Session, study_id: str) -> None:
    """Serialises the claims of one external study until the transaction ends (its running count
    and the claim that follows are one decision): PostgreSQL takes a transaction-scoped advisory
    lock on a hash of the study id; SQLite takes the database's write lock, as `lock_owner`."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(study_id.encode()).digest()
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                     {"ns": CLAIM_LOCK, "key": int.from_bytes(digest[:4], "big", signed=True)})
    else:
        lock_owner(s, None)


def active_studies(s: Session, owner: str | None) -> int:
    """The owner's queued or running studies (counted under `lock_owner`, in the insert's transaction)."""
    return s.scalar(select(func.count()).select_from(Study).where(
        Study.status.in_(ACTIVE),
        Study.owner.is_(None) if owner is None else Study.owner == owner)) or 0

