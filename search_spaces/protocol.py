"""TwoStageProtocol: the whole tuning plan, serialisable so a stored study resumes exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .sampling import METHODS

MAX_TRIALS_PER_STAGE = 10_000


@dataclass(frozen=True)
class TwoStageProtocol:
    """Stage 1 samples the wide space; each later stage samples ``narrow(previous results)``.

    ``stages`` lists the trials per stage (the paper: ``[100, 100]``).
    """

    stages: tuple[int, ...] = (100, 100)
    top_k: int = 10
    margin: float = 0.25
    seed: int = 0
    metric: str | None = None  # None: the workload's own
    mode: str = "min"
    method: str = "random"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stages = self.stages
        if isinstance(stages, int) or not isinstance(stages, list | tuple) or not stages:
            raise ValueError(f"stages must be a non-empty list of trial counts, got {stages!r}")
        if len(stages) > 10:
            raise ValueError(f"stages: at most 10 stages, got {len(stages)}")
        for i, n in enumerate(stages):
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TRIALS_PER_STAGE:
                raise ValueError(
                    f"stages[{i}] must be an integer in 1..{MAX_TRIALS_PER_STAGE}, got {n!r}")
        object.__setattr__(self, "stages", tuple(stages))
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 2:
            raise ValueError(f"top_k must be an integer >= 2, got {self.top_k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.margin, int | float) or not 0 <= self.margin <= 10:
            raise ValueError(f"margin must be a number in [0, 10], got {self.margin!r}")

    @property
    def total_trials(self) -> int:
        return sum(self.stages)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = list(self.stages)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TwoStageProtocol:
        unknown = sorted(set(d) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ValueError(f"unknown protocol field(s): {', '.join(unknown)}")
        return cls(**d)
