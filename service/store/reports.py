"""The per-epoch reports: histories, what the analysis aggregates of them in SQL, ASHA's rungs,
and the fingerprint that keys the results cache."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import func, select

from service.store.engine import StoreBase
from service.store.models import Report, Study, Trial


def _or_inf(x: float | None) -> float:
    return math.inf if x is None else x



class ReportsRepository(StoreBase):
    def histories(self, trial_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """The per-epoch reports of some trials, in epoch order: trial id -> rows."""
        out: dict[int, list[dict[str, Any]]] = {tid: [] for tid in trial_ids}
        if not trial_ids:
            return out
        with self.session() as s:
            for i in range(0, len(trial_ids), 500):  # bounded IN lists
                q = (select(Report.trial_id, Report.row).where(Report.trial_id.in_(trial_ids[i:i + 500]))
                     .order_by(Report.trial_id, Report.epoch))
                for tid, row in s.execute(q):
                    out[tid].append(row)
        return out

    def trial_dicts(self, study_id: str, history: bool = True) -> list[dict[str, Any]]:
        """Every trial of a study as a plain dict, with its per-epoch history (for the analysis);
        `history=False`: without (the API aggregates the histories in SQL: `history_costs`)."""
        cols = (Trial.id, Trial.optimizer, Trial.stage, Trial.index, Trial.status, Trial.objective, Trial.config,
                Trial.seed, Trial.runs)
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols).where(Trial.study_id == study_id)
                                .order_by(Trial.optimizer, Trial.stage, Trial.index)).all()
        out = [{"id": r.id, "optimizer": r.optimizer, "stage": r.stage, "index": r.index, "status": r.status,
                "objective": r.objective, "config": r.config, "seed": r.seed, "runs": r.runs} for r in rows]
        if history:
            histories = self.histories([t["id"] for t in out])
            for t in out:
                t["history"] = histories[t["id"]]
        return out

    def history_costs(self, study_id: str, metric: str, mode: str,
                      target: float | None = None) -> dict[str, dict[str, Any]]:
        """What the analysis reads from the per-epoch histories, aggregated in SQL (no report row
        reaches Python): per optimizer the mean time per epoch, the peak memory and, with
        `target`, AlgoPerf's time to target (service.analysis.time_to_target)."""
        epoch_time = func.nullif(Report.row["epoch_time_s"].as_float(), 0)
        memory = func.nullif(Report.row["peak_memory_mb"].as_float(), 0)
        mine = Trial.study_id == study_id
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for opt, mean_time, peak, ran in conn.execute(
                    select(Trial.optimizer, func.avg(epoch_time), func.max(memory),
                           func.count(func.distinct(Report.trial_id)))
                    .join(Trial, Trial.id == Report.trial_id).where(mine).group_by(Trial.optimizer)):
                out[opt] = {"time_per_epoch_s": float(mean_time) if mean_time is not None else None,
                            "peak_memory_mb": float(peak) if peak is not None else None, "ran": ran}
            if target is None:
                return out
            value = Report.row[metric].as_float()
            reached = value <= target if mode == "min" else value >= target
            first = (select(Report.trial_id, func.min(Report.epoch).label("epoch"))
                     .join(Trial, Trial.id == Report.trial_id).where(mine, reached)
                     .group_by(Report.trial_id).subquery())
            rows = conn.execute(
                select(Trial.optimizer, Trial.id, first.c.epoch, Report.row["wall_time_s"].as_float())
                .join(first, first.c.trial_id == Trial.id)
                .join(Report, (Report.trial_id == first.c.trial_id) & (Report.epoch == first.c.epoch))
                .order_by(Trial.optimizer, Trial.stage, Trial.index)).all()
        for opt, entry in out.items():
            mine_rows = [r for r in rows if r[0] == opt]
            fastest = None
            for _, tid, epoch, wall in mine_rows:
                if fastest is None or _or_inf(wall) < _or_inf(fastest["wall_time_s"]):
                    fastest = {"trial_id": tid, "epoch": epoch, "wall_time_s": wall}
            entry["time_to_target"] = {"target": target, "fastest": fastest,
                                       "reached_share": len(mine_rows) / entry["ran"] if entry["ran"] else None}
        return out

    def fingerprint(self, study_id: str) -> tuple:
        """What changes whenever anything the analysis or the report reads of a study changes
        (its row, a trial's status or runs, a new report): a cache key, in three small queries."""
        with self.engine.connect() as conn:
            study = conn.execute(select(Study.status, Study.updated_at).where(Study.id == study_id)).one_or_none()
            trials = conn.execute(select(func.count(), func.sum(Trial.epochs), func.sum(Trial.runs),
                                         func.count(Trial.finished_at), func.max(Trial.finished_at),
                                         func.max(Trial.started_at)).where(Trial.study_id == study_id)).one()
            reports = conn.execute(select(func.count(), func.max(Report.id)).where(Report.trial_id.in_(
                select(Trial.id).where(Trial.study_id == study_id).scalar_subquery()))).one()
        return (study_id, tuple(study) if study else None, tuple(trials), tuple(reports))

    def history(self, trial_id: int) -> list[dict[str, Any]]:
        return self.histories([trial_id])[trial_id]

    def rung_values(self, study_id: str, optimizer: str, stage: int, epoch: int, metric: str) -> list[float]:
        """The objectives the trials of one group reported at one epoch (ASHA's rung record)."""
        with self.session() as s:
            rows = s.execute(select(Report.row).join(Trial, Trial.id == Report.trial_id).where(
                Trial.study_id == study_id, Trial.optimizer == optimizer, Trial.stage == stage,
                Report.epoch == epoch))
            out = []
            for (row,) in rows:
                v = row.get(metric) if isinstance(row, dict) else None
                if isinstance(v, int | float) and math.isfinite(v):
                    out.append(float(v))
            return out
