"""One configuration -> one trained model and a stream of per-epoch metrics.

    run_trial({"workload": "fmnist_cnn", "optimizer": "adamw", "hyperparameters": {...},
               "budget": {"epochs": 1, "train_subset": 2000}, "seed": 0})

returns ``{"status": "completed" | "diverged", "metrics": {...}, "history": [...]}``. The same
function runs inside Ray Tune (``workers.tune``), which passes ``report`` and ``resume``.
"""

from __future__ import annotations

import math
import os
import random
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import optimizers

from . import workloads

ROOT_FREE = {"rfrmsprop", "rfshampoo", "ifshampoo"}  # the built-in ones; see is_root_free
CONFIG_FIELDS = {"workload", "optimizer", "hyperparameters", "budget", "seed", "device", "meta", "schedule"}
SCHEDULES = (None, "workload", "constant")  # "constant": the paper's original scheme (Figure 2)

Report = Callable[[dict[str, Any], dict[str, Any], bool], None]


def validate_config(config: dict[str, Any]) -> tuple[workloads.Workload, dict, dict]:
    """Checks a trial configuration before any training; raises ValueError naming the problem."""
    if not isinstance(config, dict):
        raise ValueError(f"a trial configuration is a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"unknown trial configuration field(s): {', '.join(unknown)}")
    for key in ("workload", "optimizer"):
        if key not in config:
            raise ValueError(f"trial configuration is missing {key!r}")
    workload = workloads.get(config["workload"])
    name = config["optimizer"]
    accepted = optimizers.hyperparameters(name)  # raises for an unknown optimizer
    hp = dict(config.get("hyperparameters") or {})
    bad = sorted(set(hp) - set(accepted))
    if bad:
        raise ValueError(f"optimizer {name!r} does not take hyperparameter(s) {', '.join(bad)}; "
                         f"it takes: {', '.join(accepted)}")
    budget = workload.budget(config.get("budget"))
    seed = config.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if config.get("schedule") not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES[1:]}, got {config.get('schedule')!r}")
    return workload, budget, hp


def _device(config: dict) -> torch.device:
    if config.get("device"):
        return torch.device(config["device"])
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_root_free(name: str) -> bool:
    """Whether the trial passes B (``batch_size``) to optimizer `name` (built-in or plugin)."""
    return optimizers.registry.spec(name).root_free


def optimizer_kwargs(name: str, hp: dict, batch_size: int, device: torch.device) -> dict:
    """The trial's hyperparameters plus what the worker knows: B, and the factor dtype."""
    kw = dict(hp)
    if is_root_free(name):
        kw.setdefault("batch_size", batch_size)  # the loss averages over the mini-batch
    if name == "ifshampoo" and device.type != "cuda":
        # bf16 matrix products are emulated on CPUs without AVX512-BF16/AMX (here ~40x slower
        # than fp32); the paper's bf16 factors are a GPU setting.
        kw.setdefault("factor_dtype", "float32")
    return kw


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_trial(config: dict[str, Any], report: Report | None = None,
              resume: dict[str, Any] | None = None) -> dict[str, Any]:
    workload, budget, hp = validate_config(config)
    seed = config.get("seed", 0)
    device = _device(config)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    prepared = workload.prepare(budget, seed, device)
    model = prepared.model
    name = config["optimizer"]
    opt = optimizers.build(name, model.parameters(),
                           **optimizer_kwargs(name, hp, prepared.batch_size, device))
    sched = workload.scheduler(opt, budget["epochs"], constant=config.get("schedule") == "constant")
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"])
        history = list(resume["history"])
        start_epoch = resume["epoch"]

    metric_name = workload.metric
    status = "completed"
    t_start = time.perf_counter()
    for epoch in range(start_epoch, budget["epochs"]):
        t0 = time.perf_counter()
        total, count, examples = 0.0, 0, 0
        lr = opt.param_groups[0]["lr"]
        diverged = False
        model.train()
        for xb, yb in prepared.train_batches(epoch):
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                loss = prepared.loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()  # summed on device: no host sync per step
            count += 1
            examples += prepared.examples_per_batch
        train_loss = (total / max(count, 1)).item() if count else float("nan")
        params_finite = all(torch.isfinite(p).all() for p in model.parameters())
        metric = prepared.evaluate(model) if params_finite and math.isfinite(train_loss) else math.nan
        if not (math.isfinite(train_loss) and math.isfinite(metric)):
            diverged = True
        sched.step()
        elapsed = time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss if math.isfinite(train_loss) else None,
            metric_name: metric if math.isfinite(metric) else None,
            "lr": lr,
            "examples_per_s": examples / elapsed if elapsed > 0 else 0.0,
            "epoch_time_s": elapsed,
            "wall_time_s": time.perf_counter() - t_start,
            "peak_memory_mb": _peak_memory_mb(device),
            "pid": os.getpid(),
            "resumed_from_epoch": start_epoch if resume is not None else None,
        }
        if diverged:
            status = "diverged"
            if report is not None:
                report({**row, "status": status}, {}, True)
            history.append(row)
            break
        history.append(row)
        last = epoch + 1 == budget["epochs"]
        if report is not None:
            state = {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                "history": history, "epoch": epoch + 1,
            }
            report({**row, "status": "completed" if last else "running"}, state, last)

    finite = [h for h in history if h.get(metric_name) is not None]
    final = dict(finite[-1]) if finite else {}
    metrics = {k: final[k] for k in ("train_loss", metric_name, "epoch") if k in final}
    return {"status": status, "metrics": metrics, "history": history,
            "metric": metric_name, "mode": workload.mode}
