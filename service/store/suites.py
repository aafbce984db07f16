"""Suites: one submission of several studies (a workload each), admitted in one transaction."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.domain.spec import TARGET_SET_KIND, ResolvedSpec, spec_json
from service.store.engine import StoreBase, now
from service.store.locks import admit
from service.store.models import AuditEntry, Study, Suite


class SuitesRepository(StoreBase):
    def create_suite(self, spec: dict[str, Any], study_specs: list[ResolvedSpec], idempotency_key: str | None,
                     owner: str | None = None, audit: dict[str, Any] | None = None,
                     max_active: int | None = None) -> tuple[Suite, bool]:
        """The suite and its studies (queued, in the order of `study_specs`) in one transaction;
        returns (suite, created). A repeated idempotency key (per owner: the pair is unique, as for
        studies) returns the first suite. With `max_active`, raises `QuotaExceeded` when the owner's
        queued or running studies plus the suite's would pass it: counted under the same per-owner
        lock as a study's admission, so parallel submissions cannot all pass the count."""
        study_specs = [spec_json(s) for s in study_specs]
        key = idempotency_key or None

        def build(s: Session) -> Suite:
            suite = Suite(id=str(uuid.uuid4()), name=spec["name"], spec=spec, owner=owner,
                          idempotency_key=key, created_at=now())
            ids = [str(uuid.uuid4()) for _ in study_specs]
            suite.spec = {**spec, "study_ids": ids}  # workload entry i -> its study, even after a deletion
            s.add(suite)
            s.flush()
            for i, (sid, study_spec) in enumerate(zip(ids, study_specs, strict=True)):
                # created_at one microsecond apart: the queue (oldest first) keeps the suite's order
                s.add(Study(id=sid, name=study_spec["name"], status="queued", spec=study_spec,
                            stage_spaces={}, notes=[], owner=owner, suite_id=suite.id,
                            created_at=suite.created_at + timedelta(microseconds=i)))
            if audit is not None:
                s.add(AuditEntry(at=now(), action="suite.create", target=suite.id,
                                 detail={"name": spec["name"], "studies": len(study_specs)}, **audit))
            return suite

        with self.session() as s:
            return admit(s, Suite, key, owner, max_active, len(study_specs), build)

    def get_suite(self, suite_id: str) -> Suite | None:
        with self.session() as s:
            return s.get(Suite, suite_id)

    def suite_studies(self, suite_id: str) -> list[Study | None]:
        """The suite's studies in the order of its workload entries (None: deleted since)."""
        with self.session() as s:
            suite = s.get(Suite, suite_id)
            if suite is None:
                return []
            rows = {st.id: st for st in s.scalars(select(Study).where(Study.suite_id == suite_id))}
            return [rows.get(sid) for sid in suite.spec.get("study_ids", [])]

    def set_suite_spec(self, suite_id: str, spec: dict[str, Any]) -> None:
        """Replaces a suite's stored spec (a target set freezes its targets into it, once)."""
        with self.session() as s:
            suite = s.get(Suite, suite_id)
            if suite is not None:
                suite.spec = spec
                s.commit()

    def suites_using_targets(self, target_set_id: str) -> list[str]:
        """The ids of the suites whose targets come from this target set."""
        with self.session() as s:  # filtered by the database (JSON ->> / json_extract), not every spec read here
            rows = s.execute(select(Suite.id, Suite.spec)
                             .where(Suite.spec["targets"].as_string() == target_set_id)).all()
            return [sid for sid, spec in rows
                    if isinstance(spec, dict) and spec.get("targets") == target_set_id
                    and spec.get("kind") != TARGET_SET_KIND]
