"""External trials (claims): a client claims a pending trial of an external study under a lease;
every write of the claimant is fenced by its claim token and the lease in the statement that
makes it, so an expired claimant can never write over the trial's next claimant
(service/control/external_trials.py decides, service/api/trials.py answers)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.domain.outcomes import ClaimOutcome
from service.domain.records import TrialCount
from service.domain.statuses import ACTIVE, FINISHED
from service.store.engine import StoreBase, now
from service.store.locks import lock_study_claims
from service.store.models import Report, Study, Trial
from service.store.trials import report_statements


class ClaimsRepository(StoreBase):
    def expire_claims(self, study_id: str) -> int:
        """Claims of the study whose lease has passed go back to pending; their reports go (the
        next claimant trains from the start). Returns how many."""
        with self.session() as s:
            n = self._expire(s, study_id)
            s.commit()
            return n

    def end_claims(self, study_id: str, reason: str) -> int:
        """The study's claimed trials still running end now as failed with `reason` (cancel: its
        claims end at once, not when their leases lapse). The claim token stays, so the
        claimant's later calls find their trial ended by the study (410). Returns how many."""
        with self.session() as s:
            lock_study_claims(s, study_id)  # after a claim that read the study as running, not beside it
            n = s.execute(update(Trial).where(
                Trial.study_id == study_id, Trial.status == "running", Trial.claim_token.is_not(None))
                .values(status="failed", error=reason, finished_at=now(), lease_expires_at=None)).rowcount
            s.commit()
            return n

    def has_lapsed_claims(self, study_id: str) -> bool:
        """Whether a claim of the study has outlived its lease (one indexed read: a GET then
        expires it, so lapsed claims read as pending when read, not at the next claim)."""
        with self.session() as s:
            return s.scalar(select(Trial.id).where(
                Trial.study_id == study_id, Trial.status == "running", Trial.claim_token.is_not(None),
                Trial.lease_expires_at < now()).limit(1)) is not None

    @staticmethod
    def _expire(s: Session, study_id: str) -> int:
        at = now()
        ids = list(s.scalars(select(Trial.id).where(
            Trial.study_id == study_id, Trial.status == "running", Trial.claim_token.is_not(None),
            Trial.lease_expires_at < at)))
        n = 0
        for tid in ids:
            if s.execute(update(Trial).where(Trial.id == tid, Trial.status == "running",
                                             Trial.lease_expires_at < at)
                         .values(status="pending", claim_token=None, lease_expires_at=None, epochs=0,
                                 metrics={}, objective=None, started_at=None)).rowcount:
                s.execute(delete(Report).where(Report.trial_id == tid))
                n += 1
        return n

    def claim_external(self, study_id: str, optimizer: str, stage: int, token: str,
                       lease_s: float) -> Trial | None:
        """Claims the lowest-index pending trial of a group for a client (None: none left). One
        statement picks and claims the row (PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent
        claims take different rows instead of queueing on one; SQLite runs writers one at a time)."""
        with self.session() as s:
            for _ in range(10):
                pick = (select(Trial.id).where(Trial.study_id == study_id, Trial.optimizer == optimizer,
                                               Trial.stage == stage, Trial.status == "pending")
                        .order_by(Trial.index).limit(1).with_for_update(skip_locked=True).scalar_subquery())
                at = now()
                tid = s.scalar(update(Trial).where(Trial.id == pick, Trial.status == "pending")
                               .values(status="running", started_at=at, finished_at=None, runs=Trial.runs + 1,
                                       claim_token=token, lease_expires_at=at + timedelta(seconds=lease_s),
                                       error=None).returning(Trial.id))
                s.commit()
                if tid is not None:
                    return s.get(Trial, tid)
                if not s.scalar(select(func.count()).select_from(Trial).where(
                        Trial.study_id == study_id, Trial.optimizer == optimizer, Trial.stage == stage,
                        Trial.status == "pending")):
                    return None
            return None

    def claim_next_external(self, study_id: str, choose: Callable[[list[TrialCount]], tuple[str, int] | None],
                            token: str, lease_s: float) -> Trial | None:
        """Claims the trial the scheduler picks for a client: `choose` gets the study's
        (optimizer, stage, status, count) rows and answers a group or None (nothing may start).
        Counting and claiming are one transaction under the study's claim lock, so claims that
        arrive together never exceed `max_concurrent_trials`."""
        with self.session() as s:
            lock_study_claims(s, study_id)
            if s.scalar(select(Study.status).where(Study.id == study_id)) not in ACTIVE:
                s.commit()  # ended (a cancel committed after the caller read it): nothing to claim
                return None
            self._expire(s, study_id)  # lapsed claims first, in the same transaction: one round of locks
            counts = [TrialCount(*row) for row in s.execute(
                select(Trial.optimizer, Trial.stage, Trial.status, func.count())
                .where(Trial.study_id == study_id)
                .group_by(Trial.optimizer, Trial.stage, Trial.status))]
            group = choose(counts)
            if group is None:
                s.commit()  # the expiries stand
                return None
            pick = (select(Trial.id).where(Trial.study_id == study_id, Trial.optimizer == group[0],
                                           Trial.stage == group[1], Trial.status == "pending")
                    .order_by(Trial.index).limit(1).scalar_subquery())
            at = now()
            # the claimed row comes back with the claim (RETURNING): no read after the commit
            t = s.scalars(update(Trial).where(Trial.id == pick, Trial.status == "pending")
                          .values(status="running", started_at=at, finished_at=None, runs=Trial.runs + 1,
                                  claim_token=token, lease_expires_at=at + timedelta(seconds=lease_s),
                                  error=None).returning(Trial)
                          .execution_options(synchronize_session=False)).first()
            s.commit()
            return t

    def _fenced(self, s: Session, study_id: str, trial_id: int, token: str, values: dict[str, Any],
                *condition) -> tuple[ClaimOutcome, Any]:
        """One UPDATE of a claimed trial, made only if `token` holds its claim and the lease has
        not passed (and `condition` holds): (OK, the trial's optimizer/stage/objective row); else why not
        (service/domain/outcomes.py ClaimOutcome), with the trial."""
        at = now()
        row = s.execute(update(Trial).where(
            Trial.id == trial_id, Trial.study_id == study_id, Trial.claim_token == token,
            Trial.status == "running", Trial.lease_expires_at > at, *condition)
            .values(**values).returning(Trial.optimizer, Trial.stage, Trial.objective)).first()
        if row is not None:
            return ClaimOutcome.OK, row
        t = s.get(Trial, trial_id)
        if t is None or t.study_id != study_id:
            return ClaimOutcome.MISSING, None
        if t.claim_token != token:
            return ClaimOutcome.LOST, t
        if t.status in FINISHED:
            return ClaimOutcome.FINISHED, t
        expires = t.lease_expires_at
        if expires is None or (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= at:
            return ClaimOutcome.EXPIRED, t
        return ClaimOutcome.CONDITION, t

    def renew_claim(self, study_id: str, trial_id: int, token: str, lease_s: float) -> tuple[ClaimOutcome, Any]:
        """A heartbeat of a claimant that is alive but has nothing to report yet (a long epoch)."""
        with self.session() as s:
            out = self._fenced(s, study_id, trial_id, token,
                               {"lease_expires_at": now() + timedelta(seconds=lease_s)})
            s.commit()
            return out

    def report_external(self, study_id: str, trial_id: int, token: str, epoch: int, row: dict[str, Any],
                        metric: str, lease_s: float) -> tuple[ClaimOutcome, Any]:
        """Stores one per-epoch report of a claimed trial (a repeated epoch replaces its row) and
        renews the lease. ("ok", optimizer/stage row); "epoch" (lower than one already reported:
        nothing stored) with the trial; or the fence's other answers (see `_fenced`)."""
        values: dict[str, Any] = {"lease_expires_at": now() + timedelta(seconds=lease_s), "epochs": epoch}
        value = row.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            values["metrics"] = {k: row[k] for k in ("train_loss", metric, "epoch") if k in row}
            values["objective"] = float(value)
        with self.session() as s:
            outcome, got = self._fenced(s, study_id, trial_id, token, values, Trial.epochs <= epoch)
            if outcome != ClaimOutcome.OK:  # nothing was written (closing the session ends the transaction)
                return (ClaimOutcome.EPOCH if outcome == ClaimOutcome.CONDITION else outcome), got
            drop, add = report_statements()
            params = {"b_trial": trial_id, "b_epoch": epoch, "b_row": row}
            s.execute(drop, params)
            s.execute(add, params)
            s.commit()
            return outcome, got

    def finish_external(self, study_id: str, trial_id: int, token: str, status: str, *,
                        metrics: dict[str, Any] | None = None, metric: str | None = None,
                        error: str | None = None) -> tuple[ClaimOutcome, str | None]:
        """Ends a claimed trial as completed/diverged/stopped/failed, fenced like a report:
        ("ok", status); ("finished", its status): it ended under this claim before (a retry,
        nothing changes); "metric": completed without the study's metric ever reported (nothing
        changes); or "missing", "lost", "expired"."""
        values: dict[str, Any] = {"status": status, "finished_at": now(), "lease_expires_at": None}
        if error is not None:
            values["error"] = error[-2000:]
        value = (metrics or {}).get(metric) if metric else None
        has_value = isinstance(value, int | float) and math.isfinite(value)
        if has_value:
            values["metrics"] = {k: metrics[k] for k in ("train_loss", metric) if k in metrics}
            values["objective"] = float(value)
        if status == "diverged":
            values["objective"] = None  # a diverged trial never counts as best
            if metric:  # and its metrics say so, not an earlier epoch's finite value (issue 30)
                values["metrics"] = {metric: None, "diverged": True}
        # completed needs the study's metric: sent now, or reported for an epoch before
        needs = [Trial.objective.is_not(None)] if status == "completed" and metric and not has_value else []
        with self.session() as s:
            outcome, got = self._fenced(s, study_id, trial_id, token, values, *needs)
            if outcome != ClaimOutcome.OK:  # nothing was written
                why = ClaimOutcome.METRIC if outcome == ClaimOutcome.CONDITION else outcome
                return why, getattr(got, "status", None)
            s.commit()
            return outcome, status

    def rung_values_of_others(self, study_id: str, optimizer: str, stage: int, epoch: int, metric: str,
                              trial_id: int) -> list[float]:
        """`rung_values` without one trial's own report (ASHA compares a trial with its peers).
        Only the metric leaves the database, not the peers' whole report rows."""
        with self.session() as s:
            values = s.scalars(select(Report.row[metric].as_float()).join(Trial, Trial.id == Report.trial_id).where(
                Trial.study_id == study_id, Trial.optimizer == optimizer, Trial.stage == stage,
                Report.epoch == epoch, Trial.id != trial_id))
            return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
