"""The trials the runner drives: creation per stage, its claims, their life cycle (started,
reported, stopped, failed) and the reads of trial rows."""

from __future__ import annotations

import functools
import math
import uuid
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, literal, select, tuple_, update

from service.domain.records import TrialCount
from service.domain.statuses import FINISHED
from service.store.engine import StoreBase, now
from service.store.models import Report, Trial


@functools.cache
def _claim_statements():
    """`claim_pending`'s statements with bound parameters (b_study, b_optimizer, b_stage, b_claim:
    an update's own column names are reserved for its SET clause)."""
    first = (select(Trial.id).where(Trial.study_id == bindparam("b_study"), Trial.optimizer == bindparam("b_optimizer"),
                                    Trial.stage == bindparam("b_stage"), Trial.status == "pending",
                                    Trial.claim.is_(None))
             .order_by(Trial.index).limit(1))
    taken = select(Trial.id).where(Trial.claim == bindparam("b_claim")).exists()
    take = (update(Trial).where(Trial.id == first.scalar_subquery(), Trial.status == "pending",
                                Trial.claim.is_(None), ~taken)
            .values(claim=bindparam("b_claim")))
    return take, select(Trial).where(Trial.claim == bindparam("b_claim")), first


@functools.cache
def _started_statement():
    return (update(Trial).where(Trial.id == bindparam("b_trial"), Trial.status.in_(("pending", "running")))
            .values(status="running", started_at=bindparam("b_at", type_=Trial.__table__.c.started_at.type),
                    runs=case((Trial.status == "pending", Trial.runs + 1), else_=Trial.runs)))


@functools.cache
def _result_statements(final: str | None, has_value: bool):
    """`record_result`'s statements (mark the trial, drop a repeated epoch's row, add the row)
    for a final report or not, with the metric's value or without."""
    at = bindparam("b_at", type_=Trial.__table__.c.started_at.type)  # typed: inside CASE nothing infers it
    values: dict[str, Any] = {
        "epochs": case((func.coalesce(Trial.epochs, 0) < bindparam("b_epoch"), bindparam("b_epoch")),
                       else_=Trial.epochs)}
    if has_value:
        values["metrics"] = bindparam("b_metrics", type_=Trial.__table__.c.metrics.type)
        values["objective"] = bindparam("b_objective")
    if final is not None:
        values.update(status=final, finished_at=at)
        if final == "diverged":
            values["objective"] = None  # a diverged trial never counts as best
    else:
        pending = Trial.status == "pending"
        values.update(status=case((pending, "running"), else_=Trial.status),
                      started_at=case((pending, at), else_=Trial.started_at))
    mark = (update(Trial).where(Trial.id == bindparam("b_trial"), Trial.status.not_in(FINISHED)).values(**values))
    return mark, *report_statements()


@functools.cache
def report_statements():
    """Storing one epoch's report row (b_trial, b_epoch, b_row): drop the row a repeated epoch
    left, add the new one. The runner's reports and external clients' share them."""
    drop = delete(Report).where(Report.trial_id == bindparam("b_trial"), Report.epoch == bindparam("b_epoch"))
    add = insert(Report).values(trial_id=bindparam("b_trial"), epoch=bindparam("b_epoch"),
                                row=bindparam("b_row", type_=Report.__table__.c.row.type))
    return drop, add


class TrialsRepository(StoreBase):
    def ensure_trials(self, study_id: str, optimizer: str, stage: int,
                      configs: list[dict[str, Any]], seeds: list[int] | None = None) -> int:
        """Creates the stage's trials that do not exist yet (pending), trial i training with
        seeds[i]; returns how many it created."""
        created = 0
        with self.session() as s:
            have = set(s.scalars(select(Trial.index).where(
                Trial.study_id == study_id, Trial.optimizer == optimizer, Trial.stage == stage)))
            for i, cfg in enumerate(configs):
                if i not in have:
                    s.add(Trial(study_id=study_id, optimizer=optimizer, stage=stage, index=i,
                                config=cfg, status="pending", metrics={}, runs=0,
                                seed=seeds[i] if seeds else None))
                    created += 1
            s.commit()
        return created

    def claim_pending(self, study_id: str, optimizer: str, stage: int, claim: str | None = None) -> Trial | None:
        """Claims the lowest-index unclaimed pending trial of a group for the runner and returns it
        (None when the group has none left). The trial stays `pending` until its worker starts it
        (`mark_started`): the store says `running` only of what runs. The conditional update makes
        the claim exclusive; `claim` makes it idempotent: a retry of a claim whose commit landed
        but whose answer was lost (a failover) returns the trial that claim took, not a second."""
        claim = claim or uuid.uuid4().hex
        # Two statements on the hot path (one per trial the run starts), built once: the claim
        # as one conditional UPDATE of the group's first free trial (skipped when this claim
        # already took one: a retry), then the row it took, found by the claim's index.
        params = {"b_study": study_id, "b_optimizer": optimizer, "b_stage": stage, "b_claim": claim}
        take, mine, first = _claim_statements()
        with self.session() as s:
            for _ in range(3):
                s.execute(take, params, execution_options={"synchronize_session": False})
                t = s.scalar(mine, params)
                s.commit()
                if t is not None:
                    return t
                # nothing taken: the group has no free trial, or a concurrent claim won the race
                if s.scalar(first, params) is None:
                    return None
            return None

    def release_trial(self, trial_id: int) -> None:
        """A claimed trial that did not finish goes back to pending, unclaimed (the runner stops)."""
        with self.session() as s:
            s.execute(update(Trial).where(Trial.id == trial_id, Trial.status.in_(("running", "pending")))
                      .values(status="pending", claim=None))
            s.commit()

    def reset_interrupted(self, study_id: str) -> int:
        """Trials that were running (or claimed) when the controller died run again; returns how
        many were running."""
        with self.session() as s:
            n = s.execute(update(Trial).where(Trial.study_id == study_id,
                                              Trial.status == "running")
                          .values(status="pending", claim=None)).rowcount
            s.execute(update(Trial).where(Trial.study_id == study_id, Trial.status == "pending",
                                          Trial.claim.is_not(None)).values(claim=None))
            s.commit()
            return n

    def trials(self, study_id: str, optimizer: str | None = None, stage: int | None = None,
               status: str | None = None, limit: int | None = None, offset: int = 0,
               after: Trial | None = None) -> list[Trial]:
        """Trials in (optimizer, stage, index) order; `after`: only those after that trial (keyset
        pagination: an index range, however deep the page)."""
        with self.session() as s:
            q = select(Trial).where(Trial.study_id == study_id)
            if after is not None:
                q = q.where(tuple_(Trial.optimizer, Trial.stage, Trial.index)
                            > tuple_(literal(after.optimizer), literal(after.stage), literal(after.index)))
            if optimizer:
                q = q.where(Trial.optimizer == optimizer)
            if stage is not None:
                q = q.where(Trial.stage == stage)
            if status:
                q = q.where(Trial.status == status)
            q = q.order_by(Trial.optimizer, Trial.stage, Trial.index)
            if offset:
                q = q.offset(offset)
            if limit is not None:
                q = q.limit(limit)
            return list(s.scalars(q))

    def trial(self, study_id: str, trial_id: int) -> Trial | None:
        with self.session() as s:
            t = s.get(Trial, trial_id)
            return t if t is not None and t.study_id == study_id else None

    def count_trials(self, study_id: str) -> list[TrialCount]:
        with self.session() as s:
            return [TrialCount(*row) for row in s.execute(
                select(Trial.optimizer, Trial.stage, Trial.status, func.count())
                .where(Trial.study_id == study_id)
                .group_by(Trial.optimizer, Trial.stage, Trial.status))]

    def mark_started(self, trial_id: int) -> None:
        """The trial's worker has started it: a claimed (pending) trial is `running` from now on
        (a restart after a worker failure only moves `started_at`)."""
        with self.session() as s:  # one statement, built once: it runs for every trial the runner starts
            s.execute(_started_statement(), {"b_trial": trial_id, "b_at": now()},
                      execution_options={"synchronize_session": False})
            s.commit()

    def record_result(self, trial_id: int, row: dict[str, Any], metric: str) -> str | None:
        """Stores one per-epoch report (a row; a repeated epoch replaces the earlier row, so no
        epoch appears twice); a final report (status completed/diverged) finishes the trial.
        Returns the trial's status after it (None: the trial is gone or had already finished,
        and the report was not stored)."""
        epoch = int(row.get("epoch") or 0)
        status = row.get("status")
        final = status if status in ("completed", "diverged") else None
        value = row.get(metric)
        has_value = isinstance(value, int | float) and math.isfinite(value)
        params: dict[str, Any] = {"b_trial": trial_id, "b_epoch": epoch, "b_at": now(), "b_row": row}
        if has_value:
            params["b_metrics"] = {k: row[k] for k in ("train_loss", metric, "epoch") if k in row}
            params["b_objective"] = float(value)
        mark, drop, add = _result_statements(final, has_value)
        with self.session() as s:  # three statements, built once, no row load: one report per trial epoch
            # never overwrite a finished trial (a duplicate report after a restart)
            n = s.execute(mark, params, execution_options={"synchronize_session": False}).rowcount
            if not n:
                s.rollback()
                return None
            s.execute(drop, params)
            s.execute(add, params)
            s.commit()
        return final or "running"

    def set_checkpoint(self, trial_id: int, path: str | None) -> None:
        """Where the trial's last per-epoch checkpoint is (a resumed trial starts from it; a
        finished trial keeps it). Written for a finished trial too: Tune reports the final
        result (which finishes the trial) before the checkpoint that came with it."""
        with self.session() as s:
            s.execute(update(Trial).where(Trial.id == trial_id).values(checkpoint=path))
            s.commit()

    def mark_stopped(self, trial_id: int, reason: str) -> bool:
        """Early stopping ended the trial: a result (its history and last objective stay).
        False when it had already ended."""
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t is not None and t.status not in FINISHED:
                t.status, t.error, t.finished_at = "stopped", reason, now()
                s.commit()
                return True
            return False

    def set_config(self, trial_id: int, config: dict[str, Any]) -> None:
        """The configuration a sampler chose when the trial was claimed (method tpe)."""
        with self.session() as s:
            s.execute(update(Trial).where(Trial.id == trial_id).values(config=config))
            s.commit()

    def count_attempt(self, trial_id: int) -> None:
        """A running trial starts again after its worker died (Tune retries it from its last
        checkpoint): `attempts` counts it."""
        with self.session() as s:
            s.execute(update(Trial).where(Trial.id == trial_id, Trial.status == "running")
                      .values(runs=Trial.runs + 1))
            s.commit()

    def mark_failed(self, trial_id: int, error: str, refine: bool = False) -> None:
        """`refine`: this error (the trial's own) replaces the one a failed trial has: Tune tells
        the searcher of a failure (the runner marks it failed) before the callback that reads it."""
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t is not None and (t.status not in FINISHED or refine and t.status == "failed"):
                # the trial's own exception message or Ray's error tail, as raised: PostgreSQL
                # refuses NUL in text, and the write must not fail in the runner's callback
                t.status, t.error, t.finished_at = "failed", error.replace("\x00", "\ufffd")[-2000:], now()
                s.commit()
