"""What the store's followers (service/followers: the Optuna view, MLflow, Ray metrics) read: new
reports after a cursor, trials' progress, per-optimizer gauges. Read-only, each one statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from service.domain.records import OptimizerGauge, ReportRow, TrialProgress
from service.domain.statuses import ACTIVE, RESULTS
from service.store.engine import StoreBase
from service.store.models import Report, Study, Trial


class FollowRepository(StoreBase):
    def watched_study_ids(self, recent_s: float = 3600.0) -> set[str]:
        """Queued or running studies, and those that ended in the last `recent_s` seconds (what a
        follower that starts, e.g. after a controller restart, catches up on)."""
        recent = datetime.now(UTC) - timedelta(seconds=recent_s)
        with self.session() as s:
            return set(s.scalars(select(Study.id).where(Study.status.in_(ACTIVE) | (Study.finished_at >= recent))))

    def last_report_id(self) -> int:
        with self.session() as s:
            return s.scalar(select(Report.id).order_by(Report.id.desc()).limit(1)) or 0

    def reports_after(self, cursor: int, limit: int = 5000) -> list[ReportRow]:
        """(report id, trial id, epoch, row, study id) of the reports after `cursor`, oldest first."""
        with self.session() as s:
            return [ReportRow(*r) for r in s.execute(
                select(Report.id, Report.trial_id, Report.epoch, Report.row, Trial.study_id)
                .join(Trial, Trial.id == Report.trial_id).where(Report.id > cursor).order_by(Report.id).limit(limit))]

    def trial_progress(self, study_id: str) -> list[TrialProgress]:
        """(id, status, epochs) of the study's started trials."""
        with self.session() as s:
            return [TrialProgress(*r) for r in s.execute(select(Trial.id, Trial.status, Trial.epochs).where(
                Trial.study_id == study_id, Trial.status != "pending"))]

    def trials_by_id(self, ids: list[int]) -> list[Trial]:
        if not ids:
            return []
        with self.session() as s:
            return list(s.scalars(select(Trial).where(Trial.id.in_(ids))))

    def optimizer_gauges(self, study_id: str, mode: str) -> tuple[list[OptimizerGauge], dict[str, float]]:
        """(optimizer, status, trials, epochs) rows, and each optimizer's best objective so far."""
        best_of = func.min if mode == "min" else func.max
        with self.session() as s:
            counts = [OptimizerGauge(*r) for r in s.execute(
                select(Trial.optimizer, Trial.status, func.count(), func.sum(Trial.epochs))
                .where(Trial.study_id == study_id).group_by(Trial.optimizer, Trial.status))]
            best = dict(s.execute(select(Trial.optimizer, best_of(Trial.objective)).where(
                Trial.study_id == study_id, Trial.status.in_(RESULTS), Trial.objective.is_not(None))
                .group_by(Trial.optimizer)).all())
        return counts, best
