"""The trials the runner drives: creation per stage, its claims, their life cycle (started,
reported, stopped, failed) and the reads of trial rows."""

from __future__ import annotations

import math
import uuid
from typing import Any

from sqlalchemy import delete, func, literal, select, tuple_, update

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
        with self.session() as s:
            mine = s.scalar(select(Trial).where(Trial.claim == claim))
            if mine is not None:
                return mine
            for _ in range(3):
                t = s.scalar(select(Trial).where(
                    Trial.study_id == study_id, Trial.optimizer == optimizer, Trial.stage == stage,
                    Trial.status == "pending", Trial.claim.is_(None)).order_by(Trial.index).limit(1))
                if t is None:
                    return None
                n = s.execute(update(Trial).where(Trial.id == t.id, Trial.status == "pending",
                                                  Trial.claim.is_(None))
                              .values(claim=claim).execution_options(synchronize_session=False)).rowcount
                s.commit()
                if n:
                    s.refresh(t)
                    return t
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
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t.status == "pending":
                t.status, t.started_at, t.runs = "running", now(), t.runs + 1
                s.commit()
            elif t.status == "running":
                t.started_at = now()
                s.commit()

    def record_result(self, trial_id: int, row: dict[str, Any], metric: str) -> None:
        """Stores one per-epoch report (a row; a repeated epoch replaces the earlier row, so no
        epoch appears twice); a final report (status completed/diverged) finishes the trial."""
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t is None or t.status in FINISHED:
                return  # never overwrite a finished trial (a duplicate report after a restart)
            epoch = int(row.get("epoch") or 0)
            s.execute(delete(Report).where(Report.trial_id == trial_id, Report.epoch == epoch))
            s.add(Report(trial_id=trial_id, epoch=epoch, row=row))
            t.epochs = max(t.epochs or 0, epoch)
            value = row.get(metric)
            if isinstance(value, int | float) and math.isfinite(value):
                t.metrics = {k: row[k] for k in ("train_loss", metric, "epoch") if k in row}
                t.objective = float(value)
            status = row.get("status")
            if status in ("completed", "diverged"):
                t.status, t.finished_at = status, now()
                if status == "diverged":
                    t.objective = None  # a diverged trial never counts as best
            elif t.status == "pending":
                t.status, t.started_at = "running", now()
            s.commit()

    def set_checkpoint(self, trial_id: int, path: str | None) -> None:
        """Where the trial's last per-epoch checkpoint is (a resumed trial starts from it; a
        finished trial keeps it). Written for a finished trial too: Tune reports the final
        result (which finishes the trial) before the checkpoint that came with it."""
        with self.session() as s:
            s.execute(update(Trial).where(Trial.id == trial_id).values(checkpoint=path))
            s.commit()

    def mark_stopped(self, trial_id: int, reason: str) -> None:
        """Early stopping ended the trial: a result (its history and last objective stay)."""
        with self.session() as s:
            t = s.get(Trial, trial_id)
            if t is not None and t.status not in FINISHED:
                t.status, t.error, t.finished_at = "stopped", reason, now()
                s.commit()

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
