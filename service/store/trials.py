"""The trials the runner drives: creation per stage, its claims, their life cycle (started,
reported, stopped, failed) and the reads of trial rows."""

from __future__ import annotations

import math
import uuid
from typing import Any

from sqlalchemy import case, delete, func, insert, literal, select, tuple_, update

from service.statuses import FINISHED
from service.store.engine import StoreBase, now
from service.store.models import Report, Trial


class TrialsMixin(StoreBase):
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
        # Two statements on the hot path (one per trial the run starts): the claim as one
        # conditional UPDATE of the group's first free trial (skipped when this claim already
        # took one: a retry), then the row it took, found by the claim's index.
        first = (select(Trial.id).where(Trial.study_id == study_id, Trial.optimizer == optimizer,
                                        Trial.stage == stage, Trial.status == "pending", Trial.claim.is_(None))
                 .order_by(Trial.index).limit(1).scalar_subquery())
        taken = select(Trial.id).where(Trial.claim == claim).exists()
        with self.session() as s:
            for _ in range(3):
                s.execute(update(Trial).where(Trial.id == first, Trial.status == "pending", Trial.claim.is_(None),
                                              ~taken)
                          .values(claim=claim).execution_options(synchronize_session=False))
                mine = s.scalar(select(Trial).where(Trial.claim == claim))
                s.commit()
                if mine is not None:
                    return mine
                # nothing taken: the group has no free trial, or a concurrent claim won the race
                if s.scalar(select(first)) is None:
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

    def count_trials(self, study_id: str) -> list[tuple[str, int, str, int]]:
        with self.session() as s:
            return list(s.execute(
                select(Trial.optimizer, Trial.stage, Trial.status, func.count())
                .where(Trial.study_id == study_id)
                .group_by(Trial.optimizer, Trial.stage, Trial.status)).all())

    def mark_started(self, trial_id: int) -> None:
        """The trial's worker has started it: a claimed (pending) trial is `running` from now on
        (a restart after a worker failure only moves `started_at`)."""
        pending = Trial.status == "pending"
        with self.session() as s:  # one statement: it runs for every trial the runner starts
            s.execute(update(Trial).where(Trial.id == trial_id, Trial.status.in_(("pending", "running")))
                      .values(status="running", started_at=now(),
                              runs=case((pending, Trial.runs + 1), else_=Trial.runs))
                      .execution_options(synchronize_session=False))
            s.commit()

    def record_result(self, trial_id: int, row: dict[str, Any], metric: str) -> str | None:
        """Stores one per-epoch report (a row; a repeated epoch replaces the earlier row, so no
        epoch appears twice); a final report (status completed/diverged) finishes the trial.
        Returns the trial's status after it (None: the trial is gone or had already finished,
        and the report was not stored)."""
        epoch = int(row.get("epoch") or 0)
        status = row.get("status")
        stamp = now()
        values: dict[str, Any] = {
            "epochs": case((func.coalesce(Trial.epochs, 0) < epoch, epoch), else_=Trial.epochs)}
        value = row.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            values["metrics"] = {k: row[k] for k in ("train_loss", metric, "epoch") if k in row}
            values["objective"] = float(value)
        if status in ("completed", "diverged"):
            values.update(status=status, finished_at=stamp)
            if status == "diverged":
                values["objective"] = None  # a diverged trial never counts as best
            after = status
        else:
            pending = Trial.status == "pending"
            values.update(status=case((pending, "running"), else_=Trial.status),
                          started_at=case((pending, stamp), else_=Trial.started_at))
            after = "running"
        with self.session() as s:  # three statements, no row load: one report per trial epoch
            # never overwrite a finished trial (a duplicate report after a restart)
            n = s.execute(update(Trial).where(Trial.id == trial_id, Trial.status.not_in(FINISHED))
                          .values(**values).execution_options(synchronize_session=False)).rowcount
            if not n:
                s.rollback()
                return None
            s.execute(delete(Report).where(Report.trial_id == trial_id, Report.epoch == epoch))
            s.execute(insert(Report).values(trial_id=trial_id, epoch=epoch, row=row))
            s.commit()
        return after

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

    def mark_failed(self, trial_id: int, error: str, refine: bool = False) -> None:
        """`refine`: this error (the trial's own) replaces the one a failed trial has: Tune tells
        the searcher of a failure (the runner marks it failed) before the callback that reads it."""
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t is not None and (t.status not in FINISHED or refine and t.status == "failed"):
                t.status, t.error, t.finished_at = "failed", error[-2000:], now()
                s.commit()
