"""Late stops under the algoperf ruleset (`ruleset.stop_late`, on by default): a trial whose
accumulated training time passes 4x an upper bound on the fastest optimizer's median time to
target on its workload stops; whatever it would reach from then on takes longer than 4x the
fastest, which the 4x rule sets to infinity anyway (service/results/algoperf.py:
`fastest_median_bound`). Its evaluations so far stay and are scored as any trial's.

The bound is read from the store at most every `REFRESH_S` seconds: it only falls as studies end,
so a stale one is larger, and stopping by it is still safe (just later). It depends only on the
ended trials (a study with one still running counts as a miss), so each refresh reads the trials
without their histories and reads the histories again only when the set of ended trials changed
(a study of S x O trials has at most that many changes, not one full read every refresh)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from service.control.pruners.base import GO_ON, Decision, PeersLoader, Pruner, Report
from service.domain.spec import ResolvedSpec
from service.results import algoperf

REFRESH_S = 2.0


class LateStopPruner(Pruner):
    def __init__(self, spec: ResolvedSpec, target: float, trials: Callable[..., Sequence[dict]]):
        self.spec, self.target, self._trials = spec, target, trials
        self._bound, self._at = float("inf"), float("-inf")
        self._ended: frozenset | None = None  # the ended trials the bound was computed from

    @classmethod
    def from_spec(cls, spec: ResolvedSpec, trials: Callable[..., Sequence[dict]] | None) -> LateStopPruner | None:
        """`trials(study_id, history=...)`: the study's trials as plain dicts (StudyStore.trial_dicts)."""
        r, target = spec.ruleset, (spec.ruleset or {}).get("target")
        if not r or not r.get("stop_late") or target is None or trials is None:
            return None
        return cls(spec, float(target), trials)

    def decides_at(self, stage: int, epoch: int) -> bool:
        return stage == 1

    def bound(self, study_id: str) -> float:
        now = time.monotonic()
        if now - self._at >= REFRESH_S:
            self._at = now
            ended = _ended(self._trials(study_id, history=False))
            if ended != self._ended:
                trials = self._trials(study_id, history=True)
                self._bound = algoperf.fastest_median_bound(self.spec, trials, self.target)
                self._ended = _ended(trials)
        return self._bound

    def decide(self, report: Report, peers: PeersLoader) -> Decision:
        if report.stage != 1 or report.train_time_s is None:
            return GO_ON
        b = self.bound(report.study_id)
        if not algoperf.late(report.train_time_s, b):
            return GO_ON
        return Decision(True, f"late stop: training time {report.train_time_s:.4g} s is past 4x {b:.4g} s, the "
                              "fastest median time to target bound so far (its time could only count as a miss)")


def _ended(trials: Sequence[dict]) -> frozenset:
    """What the bound depends on: the search trials that have ended (ids and statuses)."""
    return frozenset((t["id"], t["status"]) for t in trials
                     if t["stage"] == 1 and t["status"] in algoperf.FINISHED_TRIAL)
