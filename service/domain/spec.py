"""A study's spec: its fields and their defaults, written once.

`StudySpec` (service/api/schemas.py) is what a client sends: validated against the catalog, with
`metric`, `mode`, `budget` and search spaces optional. `StudySpec.resolved()` turns it into a
`ResolvedSpec`: frozen, every default filled in (the workload's metric, mode and budget, each
optimizer's search space, early stopping's settings). That is what the store keeps and what
every later layer reads, by attribute (`load_spec` reads a stored one back)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# A target set (POST /target-sets) is kept as a suite row whose spec has this "kind"; the suites'
# reads, keys and lookups tell the two apart by it (one spelling for every layer).
TARGET_SET_KIND = "target_set"


class EarlyStopping(BaseModel):
    """{"kind": "asha", "grace_epochs": 1, "reduction_factor": 3}: ASHA's rungs are grace_epochs,
    grace_epochs·r, ... below the budget's epochs (service/control/pruners/asha.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["asha"]
    grace_epochs: int = 1
    reduction_factor: int = 3

    @classmethod
    def problem(cls, v: dict) -> str | None:
        """What is wrong with these settings (None: nothing), in plain words; the rules, once."""
        unknown = sorted(set(v) - set(cls.model_fields))
        if unknown:
            return f"unknown field(s) {', '.join(map(str, unknown))}"
        if v.get("kind") != "asha":
            return f"unknown kind {v.get('kind')!r}; known: asha"
        g, r = v.get("grace_epochs", 1), v.get("reduction_factor", 3)
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            return f"grace_epochs must be a positive integer, got {g!r}"
        if isinstance(r, bool) or not isinstance(r, int) or r < 2:
            return f"reduction_factor must be an integer >= 2, got {r!r}"
        return None

    @model_validator(mode="before")
    @classmethod
    def _plain_messages(cls, v: Any) -> Any:
        if isinstance(v, dict) and (problem := cls.problem(v)):
            raise ValueError(problem)
        if not isinstance(v, dict | EarlyStopping):
            raise ValueError("Input should be a valid dictionary")
        return v

    def check_budget(self, epochs: int) -> None:
        if self.grace_epochs >= epochs:
            raise ValueError(f"early_stopping: grace_epochs {self.grace_epochs} leaves no rung below "
                             f"the budget's {epochs} epochs")


class ProtocolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    stages: list[int] = Field(default=[100, 100], min_length=1, max_length=10)
    top_k: int = Field(default=10, ge=2, le=10000)
    margin: float = Field(default=0.25, ge=0, le=10)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    # random/halton: every configuration of a stage fixed up front; tpe: Optuna's TPESampler asked
    # as slots free up (later trials learn from earlier ones), inside the stage's space.
    # sobol: scrambled Sobol points (scipy.stats.qmc), as the algoperf ruleset draws them.
    method: Literal["random", "halton", "tpe", "sobol"] = "random"
    # After the last search stage, each optimizer's best configuration trains again with this
    # many fresh seeds (stage len(stages) + 1): the report ranks by their mean.
    seeds: int = Field(default=0, ge=0, le=20)
    # true: every optimizer's seed runs train with the same seeds (same data order and
    # initialisation) and the verdicts use the paired test; false: each optimizer its own seeds.
    paired: bool = False
    # modern: the workload's lr schedule, every hyperparameter searched; original: the paper's
    # Figure 2 setup (constant lr, only lr searched, zero-initialised preconditioners, no B scaling).
    scheme: Literal["modern", "original"] = "modern"
    # None: every trial trains its whole budget.
    early_stopping: EarlyStopping | None = None
    # Each optimizer's whole search (every stage, and its seed runs) runs this many times with
    # independent sampler (and training) seeds: repeat r holds trials r*N..(r+1)*N-1 of each stage of
    # N; each repeat's best is one search outcome, which the search-level verdicts compare.
    repeats: int = Field(default=1, ge=1, le=10)

    @field_validator("repeats")
    @classmethod
    def _repeats_need_fixed_samplers(cls, v: int, info: ValidationInfo) -> int:
        if v > 1 and info.data.get("method") == "tpe":  # method is declared (so validated) before repeats
            raise ValueError("repeated searches need method random or halton (TPE's trials learn from each "
                             "other, so its repeats would not be independent searches)")
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list[int]) -> list[int]:
        for i, n in enumerate(v):
            if not 1 <= n <= 10000:
                raise ValueError(f"stages[{i}] = {n} is out of range 1..10000")
        return v

    @property
    def search_stages(self) -> int:
        return len(self.stages)

    def repeat_of(self, stage: int, index: int) -> int:
        """The repeat a trial of `stage` (search or seed stage) at `index` belongs to."""
        n = self.stages[stage - 1] if stage <= len(self.stages) else self.seeds
        return index // n if n else 0

    @property
    def seed_stage(self) -> int | None:
        """The stage of the seed runs (after the search stages), None when there are none."""
        return len(self.stages) + 1 if self.seeds else None


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cpu: float = Field(default=1, gt=0, le=1024)
    gpu: float = Field(default=0, ge=0, le=64)  # a fraction shares a GPU: 0.5 runs two trials on one
    memory_mb: float = Field(default=0, ge=0, le=16 * 2**20)  # reserved per trial (Ray's `memory`)

    def ray_request(self) -> dict[str, float]:
        """What one trial asks Ray for, in Ray's resource names (memory in bytes)."""
        out = {"CPU": float(self.cpu), "GPU": float(self.gpu)}
        if self.memory_mb:
            out["memory"] = float(self.memory_mb) * 2**20
        return out


class SpecFields(BaseModel):
    """The fields of a study's spec and their defaults (shared by what is sent and what is stored)."""

    name: str = Field(min_length=1, max_length=200)
    workload: str
    optimizers: list[str] = Field(min_length=1, max_length=10)
    search_spaces: dict[str, dict[str, Any]] = Field(default_factory=dict)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    metric: str | None = None
    mode: Literal["min", "max"] | None = None
    budget: dict[str, int] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int = Field(default=2, ge=1, le=1024)
    # Higher goes first; among equal priority the study with the fewest running trials.
    priority: int = Field(default=0, ge=0, le=100)
    # ray: the runner trains the trials on its Ray cluster; external: the trials wait, pending,
    # for clients that claim them over REST (`POST /studies/{id}/trials/claim`, `rootfree agent`).
    execution: Literal["ray", "external"] = "ray"


class ResolvedSpec(SpecFields):
    """A spec with every default filled in, frozen: what the store keeps and the run-time reads.
    Loading does not consult the catalog (a stored study outlives an uninstalled plugin)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    metric: str
    mode: Literal["min", "max"]
    budget: dict[str, int]
    # The suite's ruleset (service/domain/ruleset.py) this study runs under (None: rootfree's protocol),
    # and the version stamp its results carry; None on studies stored before they existed.
    ruleset: dict[str, Any] | None = None
    protocol_version: dict[str, str] | None = None

    @property
    def external(self) -> bool:
        return self.execution == "external"


def load_spec(spec: dict | ResolvedSpec) -> ResolvedSpec:
    """A stored spec (the JSON column) as the typed, resolved spec."""
    return spec if isinstance(spec, ResolvedSpec) else ResolvedSpec.model_validate(spec)


# Stand-ins for the required fields a hand-written spec leaves out (`as_spec`): they let the fields it
# gives be validated as a stored spec's are, and are dropped again after.
_STAND_INS: dict[str, Any] = {"name": "-", "workload": "-", "optimizers": ["-"], "metric": "-", "mode": "min",
                              "budget": {}}


def as_spec(spec: dict | ResolvedSpec) -> ResolvedSpec:
    """`load_spec` for the results' pure functions, which tests, bench/ and the CLI also call with
    a spec written by hand that gives only the fields they read. A full spec loads as the store's
    does; one that leaves out required fields gets the given ones validated (and the defaults of
    the rest) while each left out stays unset: reading it raises AttributeError, as the dict's
    KeyError did."""
    if isinstance(spec, ResolvedSpec):
        return spec
    missing = [k for k in _STAND_INS if k not in spec]
    if not missing:
        return ResolvedSpec.model_validate(spec)
    full = ResolvedSpec.model_validate({**{k: _STAND_INS[k] for k in missing}, **spec})
    given = {k: v for k, v in full.__dict__.items() if k not in missing}
    return ResolvedSpec.model_construct(_fields_set=full.model_fields_set - set(missing), **given)


def spec_json(spec: ResolvedSpec | dict) -> dict:
    """What the store's JSON column keeps of a spec. A spec `as_spec` read in part is refused: its
    dump would leave its unset fields out silently, and a stored study needs them."""
    if isinstance(spec, BaseModel):
        if unset := [k for k in _STAND_INS if k not in spec.__dict__]:
            raise ValueError(f"a spec given in part (without {', '.join(unset)}) cannot be stored")
        return spec.model_dump(mode="json")
    return spec
