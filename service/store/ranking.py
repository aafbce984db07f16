"""The queries behind a page of studies: the best trials, the seed re-runs and the trial counts
of several studies at once, one query each."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import bindparam, case, func, literal, select

from service.domain.records import RankedTrial, SeedRun, StudyTrialCount
from service.domain.statuses import RESULTS
from service.store.engine import StoreBase
from service.store.models import Trial


@functools.cache
def _best_of_one():
    """`best_trials_many`'s query for one study, with bound parameters: building the windowed
    select costs more than running it (SQLAlchemy's expression objects), and the poll of one
    study (`GET /studies/{id}`) is the API's hottest read."""
    rank = func.row_number().over(partition_by=Trial.optimizer,
                                  order_by=(Trial.epochs.desc(), bindparam("sign") * Trial.objective, Trial.stage,
                                            Trial.index)).label("rank")
    ranked = (select(Trial.study_id, Trial.id, Trial.optimizer, Trial.stage, Trial.index, Trial.objective, rank)
              .where(Trial.study_id == bindparam("sid"), Trial.status.in_(RESULTS), Trial.objective.is_not(None),
                     Trial.stage <= bindparam("max_stage"))
              .subquery())
    return (select(ranked.c.study_id, ranked.c.id, ranked.c.optimizer, ranked.c.stage, ranked.c.index,
                   ranked.c.objective, Trial.config, ranked.c.rank)
            .join(Trial, Trial.id == ranked.c.id).where(ranked.c.rank <= bindparam("top"))
            .order_by(ranked.c.optimizer, ranked.c.rank))


@functools.cache
def _counts_of_one():
    return (select(Trial.study_id, Trial.optimizer, Trial.stage, Trial.status, func.count())
            .where(Trial.study_id == bindparam("sid"))
            .group_by(Trial.study_id, Trial.optimizer, Trial.stage, Trial.status))


class RankingRepository(StoreBase):
    def best_trials(self, study_id: str, mode: str, k: int,
                    max_stage: int | None = None) -> dict[str, list[RankedTrial]]:
        """The top-k completed trials of every optimizer, best first (ties: stage, then index),
        as `RankedTrial`s (id, optimizer, stage, index, objective, config, rank).

        One windowed query, without the per-epoch histories: `GET /studies/{id}` runs it on every
        poll, and a paper-sized study holds hundreds of trials (bench/api_latency.py)."""
        return self.best_trials_many({study_id: (mode, k, max_stage)}).get(study_id, {})

    def best_trials_many(self, wanted: dict[str, tuple[str, int, int | None]],
                         ) -> dict[str, dict[str, list[RankedTrial]]]:
        """`best_trials` of several studies in one query: study id -> (mode, k, max_stage) ->
        study id -> optimizer -> rows (a page of `GET /studies` costs one query, not one per study)."""
        if not wanted:
            return {}
        if len(wanted) == 1:  # GET /studies/{id}, on every poll: a statement built once
            (sid, (mode, k, max_stage)), = wanted.items()
            params = {"sid": sid, "sign": -1.0 if mode == "max" else 1.0, "top": k,
                      "max_stage": 2**30 if max_stage is None else max_stage}
            with self.engine.connect() as conn:
                rows = conn.execute(_best_of_one(), params).all()
            out1: dict[str, list[RankedTrial]] = {}
            for row in rows:
                out1.setdefault(row.optimizer, []).append(RankedTrial(**row._mapping))
            return {sid: out1} if out1 else {}

        def per_study(values: dict[str, Any]):  # a constant for one study, else CASE on study_id
            if len(values) == 1:
                return literal(next(iter(values.values())))
            return case(values, value=Trial.study_id)

        sign = per_study({sid: -1.0 if mode == "max" else 1.0 for sid, (mode, _, _) in wanted.items()})
        top = per_study({sid: k for sid, (_, k, _) in wanted.items()})
        # Trials that went further first (a trial ASHA stopped early is compared with its peers at
        # the highest rung it reached), then the objective.
        rank = func.row_number().over(partition_by=(Trial.study_id, Trial.optimizer),
                                      order_by=(Trial.epochs.desc(), sign * Trial.objective, Trial.stage,
                                                Trial.index)).label("rank")
        stage_caps = {sid: ms for sid, (_, _, ms) in wanted.items() if ms is not None}
        where = [Trial.study_id.in_(list(wanted)), Trial.status.in_(RESULTS), Trial.objective.is_not(None)]
        if stage_caps:
            where.append(Trial.stage <= per_study({sid: stage_caps.get(sid, 2**30) for sid in wanted}))
        ranked = (select(Trial.study_id, Trial.id, Trial.optimizer, Trial.stage, Trial.index, Trial.objective,
                         top.label("top"), rank)
                  .where(*where).subquery())
        # The configs (JSON) of the top rows only, not of every row the window sorts.
        q = (select(ranked.c.study_id, ranked.c.id, ranked.c.optimizer, ranked.c.stage, ranked.c.index,
                    ranked.c.objective, Trial.config, ranked.c.rank)
             .join(Trial, Trial.id == ranked.c.id).where(ranked.c.rank <= ranked.c.top)
             .order_by(ranked.c.study_id, ranked.c.optimizer, ranked.c.rank))
        out: dict[str, dict[str, list[RankedTrial]]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(q):
                out.setdefault(row.study_id, {}).setdefault(row.optimizer, []).append(RankedTrial(**row._mapping))
        return out

    def seed_trials_many(self, stages: dict[str, int]) -> list[SeedRun]:
        """The trials of one stage per study (study id -> stage: the seed re-runs), as `SeedRun`s
        (study_id, optimizer, index, status, objective, seed), in one query."""
        if not stages:
            return []
        stage = (literal(next(iter(stages.values()))) if len(stages) == 1
                 else case(stages, value=Trial.study_id))
        q = (select(Trial.study_id, Trial.optimizer, Trial.index, Trial.status, Trial.objective, Trial.seed)
             .where(Trial.study_id.in_(list(stages)), Trial.stage == stage)
             .order_by(Trial.study_id, Trial.optimizer, Trial.index))
        with self.engine.connect() as conn:
            return [SeedRun(*row) for row in conn.execute(q)]

    def count_trials_many(self, study_ids: list[str]) -> list[StudyTrialCount]:
        """(study id, optimizer, stage, status, count) of several studies, in one query."""
        if not study_ids:
            return []
        if len(study_ids) == 1:
            with self.engine.connect() as conn:
                return [StudyTrialCount(*row) for row in conn.execute(_counts_of_one(), {"sid": study_ids[0]})]
        with self.engine.connect() as conn:
            return [StudyTrialCount(*row) for row in conn.execute(
                select(Trial.study_id, Trial.optimizer, Trial.stage, Trial.status, func.count())
                .where(Trial.study_id.in_(study_ids))
                .group_by(Trial.study_id, Trial.optimizer, Trial.stage, Trial.status))]
