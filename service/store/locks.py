"""Admission and claim locks: what makes a count and the write that follows it one decision when
several controllers or requests race (an owner's quota of active studies, a study's cap on
concurrently claimed external trials), and the one admission of studies and suites built on them
(`admit`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import false, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.domain.statuses import ACTIVE
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



Row = TypeVar("Row")


def admit(s: Session, model: type[Row], key: str | None, owner: str | None, max_active: int | None,
          adding: int, build: Callable[[Session], Row]) -> tuple[Row, bool]:
    """Admits a submission (a study, or a suite of `adding` studies) in `s`'s transaction and
    returns (row, created). A repeated idempotency key returns the first row: per owner (the owner
    and the key are two columns, unique as a pair; never one joined string: user names may contain
    ":"), so one user's key never returns another user's row. With `max_active`, raises
    `QuotaExceeded` when the owner's queued or running studies plus `adding` would pass it. The
    key's lookup, the count and the insert (`build` adds the rows and returns the one to answer)
    are one transaction under the per-owner lock, so parallel requests cannot all pass the count;
    a concurrent retry with the same key that commits first wins, and its row is returned."""
    same_key: tuple[Any, ...] = (model.idempotency_key == key,  # type: ignore[attr-defined]
                                 model.owner.is_(None) if owner is None else model.owner == owner)  # type: ignore[attr-defined]
    if max_active is not None or key:
        lock_owner(s, owner)
    if key:
        existing = s.scalar(select(model).where(*same_key))
        if existing:
            return existing, False
    if max_active is not None:
        active = active_studies(s, owner)
        if active + adding > max_active:
            raise QuotaExceeded(active, max_active)
    row = build(s)
    try:
        s.commit()
    except IntegrityError:  # a concurrent retry with the same key won the race
        s.rollback()
        return s.scalar(select(model).where(*same_key)), False
    return row, True
