"""The study rows: admission (idempotent, under the owner's quota), reads, status changes, the
stage spaces, and deletion."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from service.domain.spec import ResolvedSpec, spec_json
from service.domain.statuses import ACTIVE, TERMINAL
from service.store.engine import StoreBase, now
from service.store.locks import admit
from service.store.models import AuditEntry, Report, Study, Trial


class StudiesRepository(StoreBase):
    def create_study(self, spec: ResolvedSpec, idempotency_key: str | None, owner: str | None = None,
                     audit: dict[str, Any] | None = None, max_active: int | None = None) -> tuple[Study, bool]:
        """Returns (study, created). A repeated idempotency key (per owner: one user's key never
        returns another user's study) returns the first study. `audit` (actor, client) writes the
        study.create entry in the same transaction. With `max_active`, raises `QuotaExceeded` when
        the owner already has that many queued or running studies; the count and the insert are
        one transaction under a per-owner lock, so parallel requests cannot all pass the count."""
        spec = spec_json(spec)
        key = idempotency_key or None

        def build(s: Session) -> Study:
            study = Study(id=str(uuid.uuid4()), name=spec["name"], status="queued", spec=spec,
                          stage_spaces={}, notes=[], idempotency_key=key, owner=owner)
            s.add(study)
            if audit is not None:
                s.add(AuditEntry(at=now(), action="study.create", target=study.id, detail={"name": spec["name"]},
                                 **audit))
            return study

        with self.session() as s:
            return admit(s, Study, key, owner, max_active, 1, build)

    def get_study(self, study_id: str) -> Study | None:
        with self.session() as s:
            return s.get(Study, study_id)

    def list_studies(self, status: str | None, limit: int, offset: int,
                     owner: str | None = None) -> tuple[list[Study], int]:
        """A page of studies, newest first (only `owner`'s when given)."""
        with self.session() as s:
            q = select(Study)
            if status:
                q = q.where(Study.status == status)
            if owner is not None:
                q = q.where(Study.owner == owner)
            total = s.scalar(select(func.count()).select_from(q.subquery()))
            rows = s.scalars(q.order_by(Study.created_at.desc()).limit(limit).offset(offset))
            return list(rows), total or 0

    def studies_with_status(self, *statuses: str) -> list[Study]:
        with self.session() as s:
            return list(s.scalars(select(Study).where(Study.status.in_(statuses))
                                  .order_by(Study.created_at)))

    def set_status(self, study_id: str, status: str, *, only_from: tuple[str, ...] = (),
                   error: str | None = None) -> bool:
        values: dict[str, Any] = {"status": status, "updated_at": now()}
        if status == "running":
            values["started_at"] = now()
        if status in TERMINAL:
            values["finished_at"] = now()
        if error is not None:
            values["error"] = error
        with self.session() as s:
            q = update(Study).where(Study.id == study_id)
            if only_from:
                q = q.where(Study.status.in_(only_from))
            n = s.execute(q.values(**values)).rowcount
            s.commit()
            return n > 0

    def save_stage_space(self, study_id: str, optimizer: str, stage: int, space: dict,
                         notes: list[str]) -> None:
        with self.session() as s:
            study = s.get(Study, study_id)
            spaces = copy.deepcopy(study.stage_spaces or {})  # a new value: JSON is not tracked
            spaces.setdefault(optimizer, {})[str(stage)] = space
            study.stage_spaces = spaces
            flag_modified(study, "stage_spaces")
            study.notes = list(study.notes or []) + [f"{optimizer} stage {stage}: {n}" for n in notes]
            s.commit()

    def delete_study(self, study_id: str) -> None:
        """The study, its trials and their reports: three bulk statements in one transaction (an
        ORM cascade would load every trial and report row first)."""
        trial_ids = select(Trial.id).where(Trial.study_id == study_id).scalar_subquery()
        with self.engine.begin() as conn:
            conn.execute(delete(Report).where(Report.trial_id.in_(trial_ids)))
            conn.execute(delete(Trial).where(Trial.study_id == study_id))
            conn.execute(delete(Study).where(Study.id == study_id))

    def active_counts(self) -> dict[str, dict[str, int]]:
        """Trials per status of every queued or running study: study id -> status -> count."""
        out: dict[str, dict[str, int]] = {}
        with self.session() as s:
            rows = s.execute(
                select(Trial.study_id, Trial.status, func.count())
                .join(Study, Study.id == Trial.study_id)
                .where(Study.status.in_(ACTIVE))
                .group_by(Trial.study_id, Trial.status))
            for sid, status, n in rows:
                out.setdefault(sid, {})[status] = n
        return out

    def count_studies(self, *statuses: str, owner: str | None = None) -> int:
        with self.session() as s:
            q = select(func.count()).select_from(Study).where(Study.status.in_(statuses))
            if owner is not None:
                q = q.where(Study.owner == owner)
            return s.scalar(q) or 0
