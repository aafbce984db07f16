"""Pydantic schemas of the REST API (separate from the ORM models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import search_spaces
from search_spaces import SearchSpace, SearchSpaceError
from service.api.limits import CONTROL, clean_text, has_format_character
from service.domain import catalog
from service.domain.ruleset import RulesetSpec, protocol_version
from service.domain.spec import EarlyStopping, ProtocolSpec, ResolvedSpec, Resources, SpecFields  # noqa: F401 - re-exported
from workers import workloads


def reject_control_characters(value: Any, path: str = "") -> None:
    """Raises ValueError naming the first string (key or value) with a control character or a
    Unicode format character (category Cf: U+202E and the other bidi overrides would make a name
    display as another in tables and logs)."""
    if isinstance(value, str):
        if CONTROL.search(value):
            raise ValueError(f"{path or 'body'}: control characters (NUL, newline, ...) are not allowed")
        if has_format_character(value):
            raise ValueError(f"{path or 'body'}: Unicode format characters (bidi overrides such as U+202E, "
                             "zero-width characters) are not allowed")
    elif isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and (CONTROL.search(k) or has_format_character(k)):
                raise ValueError(f"{path or 'body'}: a key contains control or Unicode format characters")
            reject_control_characters(v, where)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            reject_control_characters(v, f"{path}[{i}]")


class PlainText(BaseModel):
    """A body a client sends: every string in it, keys too, is plain text (the one check; 422 naming
    the first offending field), except the `free_text` fields (a failure's stderr tail), which are
    sanitised and capped instead of refused. Bodies with early-stopping settings check them here too."""

    checks_early_stopping: ClassVar[bool] = False
    free_text: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.free_text:
            free = {k: clean_text(v).strip() for k in cls.free_text if isinstance(v := data.get(k), str)}
            reject_control_characters({k: v for k, v in data.items() if k not in free})
            data = {**data, **free}
        else:
            reject_control_characters(data)
        if cls.checks_early_stopping:
            check_early_stopping(data)
        return data


def first_error(e: ValidationError) -> tuple[str, str]:
    """(field, message) of a validation error's first problem, the field as a dotted path (a
    model-level ValueError("field: message") names its field in the message)."""
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if not field and ": " in message:
        field, message = message.split(": ", 1)
    return field, message


def check_early_stopping(data: Any) -> None:
    """A study's or a suite's early-stopping settings, checked before the nested model is: their 422
    names `early_stopping`, as it always did (an unknown key is named where it sits,
    protocol.early_stopping, by the model itself)."""
    protocol = data.get("protocol") if isinstance(data, dict) else None
    es = protocol.get("early_stopping") if isinstance(protocol, dict) else None
    if isinstance(es, dict) and set(es) <= set(EarlyStopping.model_fields) and (problem := EarlyStopping.problem(es)):
        raise ValueError(f"early_stopping: {problem}")


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


class NodeOut(BaseModel):
    node_id: str
    alive: bool
    address: str | None = None
    resources: dict[str, float]


class QueueEntry(BaseModel):
    study_id: str
    name: str
    status: str
    priority: int
    running: int
    pending: int
    position: int


class ClusterOut(BaseModel):
    nodes: list[NodeOut]
    resources: dict[str, dict[str, float]]  # total, available
    queue: list[QueueEntry]
    updated_at: datetime | None  # when the runner last recorded the cluster (None: never)


class SuiteWorkload(BaseModel):
    """One workload entry of a suite: one study. The same workload may appear twice (budgets)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    budget: dict[str, int] = Field(default_factory=dict)
    # The objective a run must reach (AlgoPerf's target); None: the baseline's median seed result.
    target: float | None = Field(default=None, allow_inf_nan=False)
    # AlgoPerf's max_runtime: a trial stops when its accumulated training time passes it.
    max_runtime_s: int | None = Field(default=None, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _known(self) -> SuiteWorkload:
        if self.name not in workloads.names():
            raise ValueError(f"name: unknown workload {self.name!r}; known: {', '.join(workloads.names())}")
        workloads.get(self.name).budget(self.budget)  # ValueError("budget.<key>: ...")
        return self


class SuiteSpec(PlainText):
    """`POST /suites`: one study per workload entry, the same optimizers, protocol and search
    spaces for each (declared once, as AlgoPerf asks), and the study fields that apply to each."""

    model_config = ConfigDict(extra="forbid")

    checks_early_stopping: ClassVar[bool] = True

    name: str = Field(min_length=1, max_length=200)
    workloads: list[SuiteWorkload] = Field(min_length=1, max_length=20)
    optimizers: list[str] = Field(min_length=1, max_length=10)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    search_spaces: dict[str, dict[str, Any]] = Field(default_factory=dict)
    baseline: str | None = None  # the optimizer speed-ups are measured against; sets missing targets
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int = Field(default=2, ge=1, le=1024)
    priority: int = Field(default=0, ge=0, le=100)
    # {"kind": "algoperf", "version": "0.6", ...}: AlgoPerf's external-tuning ruleset (service/domain/ruleset.py).
    ruleset: RulesetSpec | None = None
    # The id of a done target set (POST /target-sets) the workloads take their targets from.
    targets: str | None = Field(default=None, min_length=1, max_length=64)

    def study_protocol(self) -> ProtocolSpec:
        """The protocol each study runs: the suite's, or under a ruleset one stage of studies x
        trials_per_study scrambled Sobol draws, each trained once."""
        if self.ruleset is None:
            return self.protocol
        r = self.ruleset.resolved()
        return ProtocolSpec.model_validate({**self.protocol.model_dump(), "method": "sobol", "seeds": 0,
                                            "stages": [r["studies"] * r["trials_per_study"]], "paired": False,
                                            "early_stopping": None})

    def study_spec(self, i: int) -> StudySpec:
        w = self.workloads[i]
        budget = {**w.budget, **({"max_runtime_s": w.max_runtime_s} if w.max_runtime_s else {})}
        return StudySpec(name=f"{self.name[:160]} [{i + 1}: {w.name}]", workload=w.name,
                         optimizers=self.optimizers, search_spaces=self.search_spaces, protocol=self.study_protocol(),
                         budget=budget, resources=self.resources,
                         max_concurrent_trials=self.max_concurrent_trials, priority=self.priority)

    @model_validator(mode="after")
    def _consistent(self) -> SuiteSpec:
        from pydantic import ValidationError

        if self.baseline is not None and self.baseline not in self.optimizers:
            raise ValueError(f"baseline: {self.baseline!r} is not one of the suite's optimizers")
        if self.ruleset is not None:
            self._check_ruleset()
        for i, w in enumerate(self.workloads):
            if self.ruleset is not None or self.targets is not None:
                pass  # targets are given (checked above) or come from the target set
            elif w.target is None and self.baseline is None:
                raise ValueError(f"baseline: workloads[{i}] gives no target, so the baseline optimizer's median "
                                 "seed result sets it: name a baseline or give the target")
            elif w.target is None and not self.protocol.seeds:
                raise ValueError(f"protocol.seeds: workloads[{i}] takes its target from the baseline's median "
                                 "seed result, which needs seeds >= 1")
            try:
                self.study_spec(i)
            except ValidationError as e:
                field, message = first_error(e)
                if field.split(".")[0] in ("budget", "workload"):
                    field = f"workloads[{i}].{field}"
                raise ValueError(f"{field}: {message}") from None
        return self

    def _check_ruleset(self) -> None:
        """Under a ruleset each trial trains once on a quasi-random draw: no staged search, no seed
        runs, no ASHA, no TPE; every workload gives its target."""
        p, given = self.protocol, self.protocol.model_fields_set
        if p.method == "tpe":
            raise ValueError("ruleset: the algoperf ruleset draws quasi-random configurations; TPE "
                             "(protocol.method 'tpe') is not allowed")
        if p.early_stopping is not None:
            raise ValueError("ruleset: under the algoperf ruleset every trial trains its whole budget; ASHA "
                             "(protocol.early_stopping) is not allowed (ruleset.stop_late stops only hopeless trials)")
        if "method" in given and p.method != "sobol":
            raise ValueError(f"ruleset: the algoperf ruleset draws scrambled Sobol points; leave protocol.method "
                             f"out (got {p.method!r})")
        if p.seeds:
            raise ValueError("ruleset: under the algoperf ruleset each trial trains once; protocol.seeds must be 0")
        if "stages" in given:
            raise ValueError("ruleset: the algoperf ruleset sets the trials (studies x trials_per_study); "
                             "leave protocol.stages out")
        for i, w in enumerate(self.workloads):
            if w.target is None and self.targets is None:
                raise ValueError(f"ruleset: workloads[{i}] gives no target; the algoperf ruleset scores the time "
                                 "to a given target")

    def resolved(self) -> tuple[dict[str, Any], list[ResolvedSpec]]:
        """(the suite's stored spec, its studies' resolved specs in workload order)."""
        ruleset = self.ruleset.resolved() if self.ruleset is not None else None
        stamp = protocol_version(ruleset)
        # a study's ruleset carries its workload's target (the late stops read it)
        studies = [self.study_spec(i).resolved().model_copy(update={
                   "ruleset": {**ruleset, "target": w.target} if ruleset else None, "protocol_version": stamp})
                   for i, w in enumerate(self.workloads)]
        d = self.model_dump()
        d["ruleset"], d["protocol_version"] = ruleset, stamp
        d["protocol"] = studies[0].protocol.model_dump()
        d["search_spaces"] = studies[0].search_spaces
        d["workloads"] = [{**w, "budget": s.budget, "metric": s.metric, "mode": s.mode}
                          for w, s in zip(d["workloads"], studies, strict=True)]
        return d, studies


class SuiteStudy(BaseModel):
    id: str
    name: str
    workload: str
    budget: dict[str, Any]
    target: float | None
    status: str


class SuiteOut(BaseModel):
    id: str
    name: str
    status: str  # queued/running/completed/failed/cancelled, from its studies
    owner: str | None = None
    spec: dict[str, Any]
    created_at: datetime
    studies: list[SuiteStudy]
    links: dict[str, str]
    # why its studies cannot produce a resolved verdict, each naming the suite's field
    warnings: list[str] = []
    # {"ruleset", "version", "rootfree"}: results compare only within one ruleset version
    protocol_version: dict[str, str] | None = None
