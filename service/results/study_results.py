"""One study's results, computed once from the store — summaries → analysis (with its verdicts) —
as one typed value the report reads (and, through the cached analysis, the API and the CLI over
HTTP). The pipeline runs forward only: the summaries and the trials from the store, the analysis
from them, the ranking from the summaries; nothing goes back to a stage already left."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.domain.spec import ResolvedSpec
from service.results.summary import optimizer_summaries, ranking, study_analysis
from service.store.interface import Store
from service.store.models import Study


@dataclass(frozen=True)
class StudyResults:
    """`study`: the study's record as a report shows it (id, name, status, owner, spec as stored,
    stage_spaces, notes, created_at, finished_at, and `optimizers`: the per-optimizer summaries);
    `spec`: the same spec typed; `ranking`: optimizer names, best first; `analysis`:
    `service.results.analysis.analyse`'s output (comparisons, search comparisons, curves);
    `trials`: every trial as a dict, the drawn learning curves' trials with their history."""

    study: dict[str, Any]
    spec: ResolvedSpec
    ranking: list[str]
    analysis: dict[str, Any]
    trials: list[dict[str, Any]]

    @property
    def comparisons(self) -> list[dict[str, Any]]:
        """The verdicts (seed level, then search level with repeats)."""
        return self.analysis.get("comparisons") or []

    def verdicts(self) -> dict[str, Any]:
        """What the verdict table and the ranking line read: {"analysis", "ranking"}."""
        return {"analysis": self.analysis, "ranking": self.ranking}

    @property
    def summaries(self) -> dict[str, dict[str, Any]]:
        """Per optimizer, its summary (best trial, top-k mean, seed runs, best configuration)."""
        return {o["optimizer"]: o for o in self.study["optimizers"]}


def curve_trials(spec: ResolvedSpec, trials: list[dict], opt: str) -> list[dict]:
    """The trials whose learning curves the report draws: the three best search trials of
    `opt` and its seed runs."""
    search_stages = spec.protocol.search_stages
    sign = 1 if spec.mode == "min" else -1
    mine = [t for t in trials if t["optimizer"] == opt]
    best = sorted((t for t in mine if t["stage"] <= search_stages and t["status"] == "completed"
                   and t["objective"] is not None), key=lambda t: sign * t["objective"])[:3]
    return best + [t for t in mine if t["stage"] == search_stages + 1]


def study_results(store: Store, study: Study, analysis: dict | None = None) -> StudyResults:
    """The study's results. Only the learning curves drawn (each optimizer's three best search
    trials and its seed runs) carry a per-epoch history: the analysis aggregates the others in SQL
    (`study_analysis`; `analysis`: one already computed, e.g. cached)."""
    spec = study.resolved
    trials = store.trial_dicts(study.id, history=False)
    summaries = optimizer_summaries(store, study)
    record = {"id": study.id, "name": study.name, "status": study.status, "owner": study.owner,
              "spec": study.spec, "stage_spaces": study.stage_spaces or {}, "notes": study.notes or [],
              "optimizers": summaries, "created_at": study.created_at, "finished_at": study.finished_at}
    curves = [t for opt in spec.optimizers for t in curve_trials(spec, trials, opt)]
    histories = store.histories([t["id"] for t in curves])
    for t in curves:
        t["history"] = histories[t["id"]]
    return StudyResults(study=record, spec=spec, ranking=[o["optimizer"] for o in ranking(record)],
                        analysis=analysis if analysis is not None else study_analysis(store, study),
                        trials=trials)
