"""Workloads: dataset + model + loss + metric + default budget + learning-rate schedule.

Registry: ``workers.workloads.get(name)``, ``workers.workloads.names()``. Each mirrors one of the
paper's experiment families at a size a 2-core machine can run, and can be cut down further
through the trial's budget (``train_subset``, ``test_subset``, ``epochs``, ``width``, ...).
Installed packages add their own through the entry point group ``rootfree.workloads`` (the
contract: ``workers.plugin_api``); they are loaded once per process on first use.

This module imports no torch: the API process reads the descriptions here (catalog, study
validation) and never trains. What the built-ins do lives in ``workers.builtin_workloads``,
imported by the first trial that prepares one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optimizers.plugins import PluginRegistry

from .prepared import Prepared

if TYPE_CHECKING:
    import torch


# Budget keys every workload takes (built-in or plugin), read by the trial loop, not by `prepare`:
# eval_every: evaluate every that many steps and at the end, each evaluation a row of its own
# (global_step, accumulated training and evaluation time, the metric); left out, once per epoch.
# max_runtime_s: stop when the accumulated training time (evaluation excluded) passes it.
LOOP_BUDGET = {"eval_every": 10_000_000, "max_runtime_s": 10_000_000}


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    metric: str
    mode: str
    default_budget: dict[str, Any]
    schedule: str  # "step" (x0.1 at 50% and 75% of epochs) or "cosine"
    prepare: Callable[[dict[str, Any], int, torch.device], Prepared] = field(repr=False)
    # Upper limits of the budget keys, sized for the dataset and a large GPU: an absurd budget is
    # refused when the study is submitted, not after it has queued or exhausted memory.
    limits: dict[str, int] = field(default_factory=dict)
    # Budget keys that may be 0 (every other key is a positive integer).
    zero_ok: frozenset[str] = frozenset()
    # For a plugin: where it comes from ("package.module:attribute", set on load); None: built-in.
    plugin: str | None = field(default=None, compare=False)

    def budget(self, overrides: dict[str, Any] | None) -> dict[str, Any]:
        overrides = overrides or {}
        unknown = sorted(set(overrides) - set(self.default_budget) - set(LOOP_BUDGET))
        if unknown:
            raise ValueError(
                f"budget.{unknown[0]}: workload {self.name!r}: unknown budget field(s) {', '.join(unknown)}; "
                f"known: {', '.join(self.default_budget)}"
            )
        out = {**self.default_budget, **overrides}
        for k, v in out.items():
            low = 0 if k in self.zero_ok else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                kind = "a non-negative" if low == 0 else "a positive"
                raise ValueError(f"budget.{k}: workload {self.name!r}: budget {k} must be {kind} integer, "
                                 f"got {v!r}")
            limit = self.limits.get(k, LOOP_BUDGET.get(k))
            if limit is not None and v > limit:
                raise ValueError(f"budget.{k}: workload {self.name!r} allows at most {limit}, got {v}")
        return out

    def scheduler(self, opt: torch.optim.Optimizer, epochs: int, constant: bool = False):
        import torch  # a trial process: torch is loaded already

        if constant:  # the original training scheme: one learning rate throughout
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda _epoch: 1.0)
        if self.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
        milestones = sorted({max(1, math.ceil(epochs * 0.5)), max(1, math.ceil(epochs * 0.75))})
        milestones = [m for m in milestones if m < epochs] or [epochs]
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)


def _builtin(name: str) -> Callable[[dict[str, Any], int, torch.device], Prepared]:
    """A built-in workload's `prepare`, imported on its first call (in a trial process)."""

    def prepare(budget: dict[str, Any], seed: int, device: torch.device) -> Prepared:
        from .builtin_workloads import PREPARE

        return PREPARE[name](budget, seed, device)

    return prepare


_REGISTRY: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "fmnist_cnn",
            "ResNet-style CNN on Fashion-MNIST (stands in for ResNet/VGG on CIFAR-100)",
            "test_error", "min",
            {"epochs": 2, "train_subset": 10000, "test_subset": 2000, "batch_size": 128,
             "width": 16},
            "step",
            _builtin("fmnist_cnn"),
            limits={"epochs": 1000, "train_subset": 60000, "test_subset": 10000, "batch_size": 8192, "width": 512},
        ),
        Workload(
            "fmnist_vit",
            "Vision transformer, patch 4 on 28x28 Fashion-MNIST (stands in for the paper's ViTs)",
            "test_error", "min",
            {"epochs": 2, "train_subset": 10000, "test_subset": 2000, "batch_size": 128,
             "width": 64},
            "cosine",
            _builtin("fmnist_vit"),
            limits={"epochs": 1000, "train_subset": 60000, "test_subset": 10000, "batch_size": 8192, "width": 2048},
        ),
        Workload(
            "ptb_lstm",
            "3-layer LSTM language model on Penn Treebank (the paper's RNN task)",
            "perplexity", "min",
            {"epochs": 2, "train_subset": 200000, "test_subset": 20000, "batch_size": 20,
             "width": 128, "bptt": 35},
            "step",
            _builtin("ptb_lstm"),
            limits={"epochs": 1000, "train_subset": 1_000_000, "test_subset": 100_000, "batch_size": 4096,
                    "width": 4096, "bptt": 1024},
        ),
        Workload(
            "cifar100_resnet",
            "ResNet on CIFAR-100 (needs cifar-100-python under ROOTFREE_DATA_DIR)",
            "test_error", "min",
            {"epochs": 30, "train_subset": 50000, "test_subset": 10000, "batch_size": 128,
             "width": 32},
            "step",
            _builtin("cifar100_resnet"),
            limits={"epochs": 1000, "train_subset": 50000, "test_subset": 10000, "batch_size": 8192,
                    "width": 256},
        ),
        Workload(
            "noisy_quadratic",
            "Noisy quadratic model (Zhang et al. 2019): a trial takes well under a second; "
            "pace_ms stretches each epoch to simulate a heavier model (scheduler tests, benchmarks)",
            "loss", "min",
            {"epochs": 3, "steps": 20, "batch_size": 16, "width": 16, "pace_ms": 0},
            "step",
            _builtin("noisy_quadratic"),
            limits={"epochs": 10000, "steps": 100_000, "batch_size": 65536, "width": 4096,
                    "pace_ms": 600_000},
            zero_ok=frozenset({"pace_ms"}),
        ),
        Workload(
            "sbm_gcn",
            "Two-layer GCN, node classification on a seeded stochastic block model graph (stands in "
            "for the paper's GNN task; full-graph steps)",
            "test_error", "min",
            {"epochs": 10, "steps": 10, "nodes": 1000, "blocks": 4, "degree": 8, "features": 16,
             "width": 32},
            "step",  # the paper's GNN runs use step decay (App. J), as its CNN and LSTM runs
            _builtin("sbm_gcn"),
            limits={"epochs": 10000, "steps": 10000, "nodes": 5000, "blocks": 100, "degree": 1000,
                    "features": 4096, "width": 4096},
        ),
    )
}


BUILTIN = frozenset(_REGISTRY)
ENTRY_POINT_GROUP = "rootfree.workloads"


def _check_plugin(w: Workload) -> str | None:
    if w.mode not in ("min", "max"):
        return f"mode must be 'min' or 'max', got {w.mode!r}"
    if w.schedule not in ("step", "cosine"):
        return f"schedule must be 'step' or 'cosine', got {w.schedule!r}"
    if not isinstance(w.metric, str) or not w.metric:
        return "metric must be a non-empty string"
    if not callable(w.prepare):
        return "prepare is not callable"
    if "epochs" not in w.default_budget:
        return "default_budget must have 'epochs'"
    try:
        w.budget(None)
    except ValueError as e:
        return f"default_budget is invalid: {e}"
    return None


PLUGINS = PluginRegistry(ENTRY_POINT_GROUP, Workload, _REGISTRY, check=_check_plugin,
                         admit=lambda w, path: (w, dataclasses.replace(w, plugin=path)), what="workload")


def load_plugins(reload: bool = False) -> None:
    """Loads the ``rootfree.workloads`` entry points once per process (the controller at start-up,
    every trial process on its first trial); a plugin that fails is logged and listed in
    :func:`plugin_errors`, never raised."""
    PLUGINS.load(reload)


def register(w: Workload) -> None:
    """Adds a workload under a name no one has taken (the controller's description of a plugin
    only the cluster's nodes have; see service.domain.catalog.adopt)."""
    load_plugins()
    if w.name in _REGISTRY:
        raise ValueError(f"workload {w.name!r} exists")
    _REGISTRY[w.name] = w


def plugin_errors() -> list[dict[str, str]]:
    """The workload plugins refused in this process, each ``{"name", "source", "error"}``."""
    return PLUGINS.refused()


def names() -> list[str]:
    return PLUGINS.names()


def get(name: str) -> Workload:
    return PLUGINS.get(name)
