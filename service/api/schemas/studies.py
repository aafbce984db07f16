"""The studies' REST schemas: `StudySpec` (what a client sends, validated against the catalog) and
what the study endpoints answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

import search_spaces
from search_spaces import SearchSpace, SearchSpaceError
from service.api.schemas.text import PlainText
from service.domain import catalog
from service.domain.ruleset import protocol_version
from service.domain.spec import ResolvedSpec, SpecFields
from workers import workloads


class StudySpec(PlainText, SpecFields):
    """A study's spec as a client sends it (fields and defaults: service/domain/spec.py)."""

    model_config = ConfigDict(extra="forbid")

    checks_early_stopping: ClassVar[bool] = True

    @field_validator("workload")
    @classmethod
    def _workload(cls, v: str) -> str:
        if v not in workloads.names():
            raise ValueError(f"unknown workload {v!r}; known: {', '.join(workloads.names())}")
        return v

    @field_validator("optimizers")
    @classmethod
    def _optimizers(cls, v: list[str]) -> list[str]:
        known = catalog.optimizer_names()  # built-ins and installed plugins
        for name in v:
            if name not in known:
                raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(known)}")
        if len(set(v)) != len(v):
            raise ValueError("optimizers must not repeat")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        for name, space in self.search_spaces.items():
            if name not in self.optimizers:
                raise ValueError(f"search_spaces.{name}: {name!r} is not one of the study's optimizers")
            try:
                SearchSpace.from_dict(space).validate_for(
                    search_spaces.accepted_hyperparameters(name), name)
            except SearchSpaceError as e:
                raise ValueError(f"search_spaces.{name}: {e}") from None
        if self.protocol.scheme == "original":
            for name, space in self.search_spaces.items():
                searched = [k for k, d in space.items() if isinstance(d, dict) and d.get("kind") != "fixed"]
                if searched != ["lr"]:
                    raise ValueError(f"search_spaces.{name}: the original scheme searches only lr "
                                     f"(searched here: {', '.join(searched) or 'nothing'})")
            for name in self.optimizers:
                if name not in self.search_spaces:
                    try:
                        search_spaces.original_scheme_space(name)
                    except SearchSpaceError as e:  # a plugin that does not say how (or has no lr)
                        raise ValueError(f"optimizers: {e}") from None
        w = workloads.get(self.workload)
        if self.metric is not None and self.metric != w.metric:
            raise ValueError(f"metric: workload {self.workload!r} reports {w.metric!r}, "
                             f"not {self.metric!r}")
        budget = w.budget(self.budget)  # raises ValueError("budget.<key>: ...") naming the key and its limit
        if self.protocol.early_stopping is not None:
            self.protocol.early_stopping.check_budget(budget["epochs"])
        return self

    def resolved(self) -> ResolvedSpec:
        """The spec with every default filled in: what is stored and what the runner reads."""
        w = workloads.get(self.workload)
        default = (search_spaces.original_scheme_space if self.protocol.scheme == "original"
                   else search_spaces.default_space)
        return ResolvedSpec.model_validate({
            **self.model_dump(), "metric": self.metric or w.metric, "mode": self.mode or w.mode,
            "budget": w.budget(self.budget), "protocol_version": protocol_version(None),
            "search_spaces": {o: (self.search_spaces.get(o) or default(o).to_dict()) for o in self.optimizers}})


class StageCounts(BaseModel):
    total: int
    by_status: dict[str, int]


class OptimizerSummary(BaseModel):
    optimizer: str
    stages: dict[str, StageCounts]
    best_objective: float | None
    best_trial_id: int | None
    best_config: dict[str, Any] | None
    top_k_mean: float | None
    top_k_std: float | None
    stage_spaces: dict[str, Any]
    # The best configuration re-trained with fresh seeds: {"n", "values", "seeds", "mean", "std", "median"}.
    seed_runs: dict[str, Any] | None = None


class StudyOut(BaseModel):
    id: str
    name: str
    status: str
    owner: str | None = None  # the user who submitted it
    suite_id: str | None = None  # the suite it belongs to (POST /suites), if any
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    notes: list[str]
    optimizers: list[OptimizerSummary]
    dashboard_url: str | None
    # The study's log stream as served by the Ray dashboard (its state API reads the file on the
    # runner's Ray node); `links.logs` serves the same lines from this API.
    dashboard_log_url: str | None = None
    queue: QueuePlace | None = None  # where a queued or running study stands (None once ended)
    links: dict[str, str]
    # why the spec cannot produce a resolved verdict, each naming the field (service/results/feasibility.py)
    warnings: list[str] = []


class QueuePlace(BaseModel):
    position: int  # 1: the study the next free slot goes to
    running: int
    pending: int
    priority: int


class StudyList(BaseModel):
    items: list[StudyOut]
    total: int
    limit: int
    offset: int


class TrialOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    study_id: str
    optimizer: str
    stage: int
    index: int
    config: dict[str, Any]
    seed: int | None = None  # the training seed (seed re-runs: a fresh one each)
    status: str
    objective: float | None
    metrics: dict[str, Any]
    # Per-epoch reports: always on GET /trials/{id}; on lists only with ?include=history.
    history: list[dict[str, Any]] | None = None
    error: str | None
    runs: int
    attempts: int = 0  # times it was started or claimed (an expired claim claimed again: 2)
    started_at: datetime | None
    finished_at: datetime | None


class BestConfig(BaseModel):
    optimizer: str
    rank: int
    trial_id: int
    objective: float
    hyperparameters: dict[str, Any]
    snippet: str


class Export(BaseModel):
    study_id: str
    workload: str
    metric: str
    mode: str
    best: dict[str, list[BestConfig]]
    # best first: by the seed runs' mean where there are seed runs, else by the best search trial
    ranking: list[str] = []
    seed_runs: dict[str, dict[str, Any]] = {}
    # pairwise verdicts from the seed runs (service/results/verdicts.py): a, b, diff, lo, hi, p, verdict, seeds_needed
    comparisons: list[dict[str, Any]] = []
    protocol_version: dict[str, str] | None = None  # {"ruleset", "version", "rootfree"}
