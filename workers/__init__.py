"""How a trial runs: real workloads and the trainable that trains them with any optimizer.

    from workers import run_trial
    run_trial({"workload": "fmnist_cnn", "optimizer": "adamw", "hyperparameters": {"lr": 1e-3},
               "budget": {"epochs": 1, "train_subset": 2000}, "seed": 0})

`workers.workloads` (the registry: names, metrics, budgets) loads without torch, for the API
process; the trial itself (torch) is imported on first use of `run_trial` or `validate_config`.
"""

from typing import TYPE_CHECKING

from . import workloads

if TYPE_CHECKING:
    from .trial import run_trial, validate_config

__all__ = ["run_trial", "validate_config", "workloads"]


def __getattr__(name: str):
    if name in ("run_trial", "validate_config"):
        from . import trial

        return getattr(trial, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
