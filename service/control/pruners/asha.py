"""Early stopping inside the two-stage protocol: asynchronous successive halving (ASHA, Li et al.
2020). `Asha` is the pure rule; `AshaPruner` applies it to a study's reports and owns the values
recorded at each rung (loaded from the store's per-epoch reports the first time a rung is asked
about, so a restarted controller makes the same decisions).

Rungs are epochs: grace, grace·r, grace·r², ... below the budget's last epoch. At a rung, a trial
goes on only if its objective is in the best 1/r of the values recorded at that rung so far by the
trials of the same study, optimizer and stage (never AdamW's trials against SGD's: every optimizer
gets the same rungs and the same chance). A stopped trial is a result, not a failure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.control.pruners.base import GO_ON, Decision, PeersLoader, Pruner, Report
from service.domain.spec import ResolvedSpec


@dataclass(frozen=True)
class Asha:
    grace_epochs: int = 1
    reduction_factor: int = 3
    max_epochs: int = 1

    @property
    def rungs(self) -> list[int]:
        out, e = [], self.grace_epochs
        while e < self.max_epochs:
            out.append(e)
            e *= self.reduction_factor
        return out

    def keep_going(self, value: float | None, rung_values: Sequence[float], mode: str) -> bool:
        """At a rung, with `rung_values` recorded there before (this trial's value not included):
        True when this trial is in the best 1/r of them all. A non-finite value stops."""
        if value is None or not math.isfinite(value):
            return False
        values = np.asarray([*rung_values, value], dtype=float)
        if mode == "min":
            cutoff = np.nanpercentile(values, 100.0 / self.reduction_factor)
            return value <= cutoff
        cutoff = np.nanpercentile(values, 100.0 * (1 - 1.0 / self.reduction_factor))
        return value >= cutoff


class AshaPruner(Pruner):
    """ASHA over one study: only search stages are decided on (seed runs train their whole
    budget), each (optimizer, stage) group against its own rungs."""

    def __init__(self, asha: Asha, search_stages: int, metric: str, mode: str):
        self.asha, self.search_stages, self.metric, self.mode = asha, search_stages, metric, mode
        self._rungs = frozenset(asha.rungs)
        self._values: dict[tuple[str, int, int], list[float]] = {}  # (optimizer, stage, epoch) -> values

    @classmethod
    def from_spec(cls, spec: ResolvedSpec) -> AshaPruner | None:
        es = spec.protocol.early_stopping
        if es is None:
            return None
        asha = Asha(es.grace_epochs, es.reduction_factor, spec.budget["epochs"])
        return cls(asha, spec.protocol.search_stages, spec.metric, spec.mode)

    def decides_at(self, stage: int, epoch: int) -> bool:
        return stage <= self.search_stages and epoch in self._rungs

    def decide(self, report: Report, peers: PeersLoader) -> Decision:
        if not self.decides_at(report.stage, report.epoch):
            return GO_ON
        key = (report.optimizer, report.stage, report.epoch)
        if key not in self._values:
            self._values[key] = [float(v) for v in peers()]
        value = report.value
        go_on = self.asha.keep_going(value, self._values[key], self.mode)
        if isinstance(value, int | float):
            self._values[key].append(float(value))
        if go_on:
            return GO_ON
        shown = f"{value:.4g}" if isinstance(value, int | float) and math.isfinite(value) else str(value)
        return Decision(True, f"ASHA: {self.metric} {shown} at epoch {report.epoch} is not in the best "
                              f"1/{self.asha.reduction_factor} of its group's rung")
