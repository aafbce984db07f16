"""One rootfree trial as Optuna sees it: its state and value, written once. The live Optuna view
(service/store/optuna_mirror.py) and the TPE sampler (service/control/samplers/tpe.py) both map
through here, so a trial reads the same in the dashboard as in the sampler's history.

A trial stopped early (ASHA) is PRUNED with its last value, at its last epoch as an intermediate
value: Optuna's TPESampler ranks pruned trials by their last intermediate value (after every
complete one; a pruned trial without one ranks last), and `Study.tell` takes a pruned trial's value
from it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.trial import TrialState


def finite(v: Any) -> float | None:
    """A finite number as a float; None for NaN, infinities, booleans and anything else."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def optuna_state(status: str, objective: Any) -> tuple[TrialState, float | None]:
    """(Optuna state, value) of a trial with this status and objective: running -> RUNNING;
    completed with a finite objective -> COMPLETE with it; stopped -> PRUNED with its last value
    (None when it has none); pending -> WAITING; failed, diverged, or completed without a value ->
    FAIL."""
    from optuna.trial import TrialState  # on use: the CLI and the API start without Optuna

    value = finite(objective)
    if status == "running":
        return TrialState.RUNNING, None
    if status == "pending":
        return TrialState.WAITING, None
    if status == "completed" and value is not None:
        return TrialState.COMPLETE, value
    if status == "stopped":
        return TrialState.PRUNED, value
    return TrialState.FAIL, None


def last_report(state: TrialState, value: float | None, epoch: int | None) -> dict[int, float]:
    """The intermediate values a trial known only by its last value needs in Optuna: a PRUNED trial's
    value at its last epoch (see the module docstring); none for any other state."""
    from optuna.trial import TrialState

    return {int(epoch or 0): value} if state == TrialState.PRUNED and value is not None else {}
