"""How a trial runs: real workloads and the trainable that trains them with any optimizer.

    from workers import run_trial
    run_trial({"workload": "fmnist_cnn", "optimizer": "adamw", "hyperparameters": {"lr": 1e-3},
               "budget": {"epochs": 1, "train_subset": 2000}, "seed": 0})
"""

from . import workloads
from .trial import run_trial, validate_config

__all__ = ["run_trial", "validate_config", "workloads"]
