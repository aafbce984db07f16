"""The suites' REST schemas: `SuiteSpec` (one study per workload entry) and what they answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.api.schemas.studies import StudySpec
from service.api.schemas.text import PlainText, first_error
from service.domain.ruleset import RulesetSpec, protocol_version
from service.domain.spec import ProtocolSpec, ResolvedSpec, Resources
from workers import workloads


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
