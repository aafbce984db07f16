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
        # The paper's bf16 factors are a GPU setting. On a CPU where oneDNN has no bf16 kernel
        # the optimizer now multiplies bf16 factors in float32 (optimizers._common.bmm), so this is
        # no longer about speed; CPU trials keep float32 factors as they always had.
        kw.setdefault("factor_dtype", "float32")
    return kw


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Clock:
    """A trial's accumulated training time (evaluation excluded), evaluation time and global step,
    carried over a resume from the last row; `evaluate` times one evaluation and returns its row."""

    def __init__(self, model, evaluate, device: torch.device, metric: str, history: list[dict]):
        prev = history[-1] if history else {}
        self.train_s, self.eval_s = float(prev.get("train_time_s") or 0.0), float(prev.get("eval_time_s") or 0.0)
        self.global_step = int(prev.get("global_step") or 0)
        self.model, self._evaluate, self.metric = model, evaluate, metric
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self._since: float | None = None
        evals = [e for h in history for e in h.get("evals") or []]
        self.last: dict | None = evals[-1] if evals else None
        self.last_step = self.last["global_step"] if self.last else -1

    def start(self) -> None:
        self._since = time.perf_counter()

    def stop(self) -> None:
        if self._since is not None:
            self._sync()
            self.train_s += time.perf_counter() - self._since
            self._since = None

    def train_time(self) -> float:
        return self.train_s + (time.perf_counter() - self._since if self._since is not None else 0.0)

    def evaluate(self, epoch: int) -> dict[str, Any]:
        running = self._since is not None
        self.stop()
        t = time.perf_counter()
        finite = all(torch.isfinite(p).all() for p in self.model.parameters())
        value = self._evaluate(self.model) if finite else math.nan
        self.model.train()
        self.eval_s += time.perf_counter() - t
        if running:
            self.start()
        self.last_step = self.global_step
        self.last = {"global_step": self.global_step, "epoch": epoch, "train_time_s": self.train_s,
                     "eval_time_s": self.eval_s, self.metric: value if math.isfinite(value) else None}
        return self.last


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
    clock = _Clock(model, prepared.evaluate, device, metric_name, history)
    eval_every, max_runtime = budget.get("eval_every") or 0, budget.get("max_runtime_s")
    t_start = time.perf_counter()
    for epoch in range(start_epoch, budget["epochs"]):
        t0 = time.perf_counter()
        total, count, examples = 0.0, 0, 0
        lr = opt.param_groups[0]["lr"]
        diverged = out_of_time = False
        evals: list[dict[str, Any]] = []
        model.train()
        clock.start()
        for xb, yb in prepared.train_batches(epoch):
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                loss = prepared.loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()  # summed on device: no host sync per step
            count += 1
            examples += prepared.examples_per_batch
            clock.global_step += 1
            if eval_every and clock.global_step % eval_every == 0:
                evals.append(clock.evaluate(epoch + 1))
            if max_runtime is not None and clock.train_time() > max_runtime:
                out_of_time = True  # AlgoPerf's max_runtime: the trial ends here
                break
        train_loss = (total / max(count, 1)).item() if count else float("nan")
        clock.stop()
        last_epoch = epoch + 1 == budget["epochs"] or out_of_time
        if not eval_every:
            metric = clock.evaluate(epoch + 1)[metric_name] if math.isfinite(train_loss) else math.nan
        else:  # evaluated every eval_every steps; once more at the end, and before any other evaluation
            if (last_epoch and clock.last_step != clock.global_step) or clock.last is None:
                evals.append(clock.evaluate(epoch + 1))
            metric = clock.last[metric_name]
        metric = math.nan if metric is None else metric
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
            # accumulated over the trial: steps, training time (evaluation excluded), evaluation time
            "global_step": clock.global_step, "train_time_s": clock.train_s, "eval_time_s": clock.eval_s,
        }
        if eval_every:
            row["evals"] = evals
        if out_of_time:
            row["max_runtime_reached"] = True
        if diverged:
            status = "diverged"
            if report is not None:
                report({**row, "status": status}, {}, True)
            history.append(row)
            break
        history.append(row)
        last = last_epoch
        if report is not None:
            state = {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                "history": history, "epoch": epoch + 1,
            }
            report({**row, "status": "completed" if last else "running"}, state, last)
        if last:
            break

    finite = [h for h in history if h.get(metric_name) is not None]
    final = dict(finite[-1]) if finite else {}
    metrics = {k: final[k] for k in ("train_loss", metric_name, "epoch") if k in final}
    return {"status": status, "metrics": metrics, "history": history,
            "metric": metric_name, "mode": workload.mode}
