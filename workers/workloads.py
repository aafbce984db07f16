"""Workloads: dataset + model + loss + metric + default budget + learning-rate schedule.

Registry: ``workers.workloads.get(name)``, ``workers.workloads.names()``. Each mirrors one of the
paper's experiment families at a size a 2-core machine can run, and can be cut down further
through the trial's budget (``train_subset``, ``test_subset``, ``epochs``, ``width``, ...).
Installed packages add their own through the entry point group ``rootfree.workloads`` (the
contract: ``workers.plugin_api``); they are loaded once per process on first use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from . import datasets
from .models import LSTMLanguageModel, ResNet, ViT

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Prepared:
    """One trial's model and data, ready to train."""

    model: nn.Module
    batch_size: int
    train_batches: Callable[[int], Iterator[Batch]]  # epoch -> batches (seeded shuffle)
    evaluate: Callable[[nn.Module], float]  # the workload's metric on held-out data
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    examples_per_batch: int


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
        unknown = sorted(set(overrides) - set(self.default_budget))
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
            limit = self.limits.get(k)
            if limit is not None and v > limit:
                raise ValueError(f"budget.{k}: workload {self.name!r} allows at most {limit}, got {v}")
        return out

    def scheduler(self, opt: torch.optim.Optimizer, epochs: int, constant: bool = False):
        if constant:  # the original training scheme: one learning rate throughout
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda _epoch: 1.0)
        if self.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
        milestones = sorted({max(1, math.ceil(epochs * 0.5)), max(1, math.ceil(epochs * 0.75))})
        milestones = [m for m in milestones if m < epochs] or [epochs]
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)


# ---------------------------------------------------------------------- image classification
@lru_cache(maxsize=8)
def _image_tensors(source: str, train_subset: int, test_subset: int):
    """Normalised float tensors, cached once per worker process."""
    d = datasets.fashion_mnist() if source == "fashion_mnist" else datasets.cifar100()
    g = torch.Generator().manual_seed(1234)  # the subset is part of the workload, not the trial
    tr = torch.randperm(len(d["train_x"]), generator=g)[:train_subset]
    te = torch.arange(min(test_subset, len(d["test_x"])))
    x, tx = d["train_x"][tr].float().div_(255), d["test_x"][te].float().div_(255)
    if x.ndim == 3:
        x, tx = x.unsqueeze(1), tx.unsqueeze(1)
    mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / std, d["train_y"][tr], (tx - mean) / std, d["test_y"][te]


def _classification(source: str, make_model: Callable[[dict], nn.Module]):
    def prepare(budget: dict, seed: int, device: torch.device) -> Prepared:
        x, y, tx, ty = _image_tensors(source, budget["train_subset"], budget["test_subset"])
        torch.manual_seed(seed)
        model = make_model(budget).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        bs = budget["batch_size"]

        def batches(epoch: int) -> Iterator[Batch]:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x) - bs + 1, bs):  # full batches: B is the averaging size
                idx = perm[i : i + bs]
                yield x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)

        @torch.no_grad()
        def evaluate(m: nn.Module) -> float:
            m.eval()
            wrong = 0
            for i in range(0, len(tx), 1000):
                xb = tx[i : i + 1000].to(device)
                with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                    wrong += (m(xb).argmax(1).cpu() != ty[i : i + 1000]).sum().item()
            m.train()
            return wrong / len(tx)

        return Prepared(model, bs, batches, evaluate, nn.functional.cross_entropy, bs)

    return prepare


# ---------------------------------------------------------------------- language modelling
@lru_cache(maxsize=4)
def _ptb_streams(train_tokens: int, eval_tokens: int):
    d = datasets.penn_treebank()
    return d["train"][:train_tokens], d["valid"][:eval_tokens], len(d["vocab"])


def _ptb_prepare(budget: dict, seed: int, device: torch.device) -> Prepared:
    train, valid, vocab = _ptb_streams(budget["train_subset"], budget["test_subset"])
    bs, bptt = budget["batch_size"], budget["bptt"]
    torch.manual_seed(seed)
    model = LSTMLanguageModel(vocab, dim=budget["width"], layers=3).to(device)

    def rows(stream: torch.Tensor) -> torch.Tensor:
        n = (len(stream) - 1) // (bs * bptt) * bs * bptt
        return stream[:n + 1]

    def batches(epoch: int) -> Iterator[Batch]:
        s = rows(train)
        inputs = s[:-1].view(-1, bptt)
        targets = s[1:].view(-1, bptt)
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(len(inputs), generator=g)
        for i in range(0, len(perm) - bs + 1, bs):
            idx = perm[i : i + bs]
            yield inputs[idx].to(device), targets[idx].to(device)

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                           target.reshape(-1))

    @torch.no_grad()
    def evaluate(m: nn.Module) -> float:
        m.eval()
        s = valid[: (len(valid) - 1) // bptt * bptt + 1]
        inputs, targets = s[:-1].view(-1, bptt).to(device), s[1:].view(-1, bptt).to(device)
        total = 0.0
        for i in range(0, len(inputs), 64):
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                logits = m(inputs[i : i + 64])
            total += loss_fn(logits, targets[i : i + 64]).item() * len(inputs[i : i + 64])
        m.train()
        return math.exp(min(total / len(inputs), 50.0))

    return Prepared(model, bs, batches, evaluate, loss_fn, bs * bptt)


# ---------------------------------------------------------------------- noisy quadratic model
class NoisyQuadratic(nn.Module):
    """The noisy quadratic model (Zhang et al. 2019, "Which algorithmic choices matter at which
    batch sizes?"): a matrix parameter W, curvature H and gradient noise with covariance H/B.

    H is Kronecker-structured, ``h_ij = a_i b_j`` with ``a_i = 1/(i+1)``, so a Kronecker
    preconditioner (Shampoo, IF-Shampoo) can capture it exactly, as the paper's analysis assumes.
    The forward pass takes a batch of noise samples eps ~ N(0, H^-1) and returns ``W - eps``."""

    def __init__(self, width: int):
        super().__init__()
        a = 1.0 / torch.arange(1, width + 1, dtype=torch.float32)
        self.register_buffer("h", torch.outer(a, a))
        self.weight = nn.Parameter(torch.ones(width, width))

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        return self.weight - eps

    def expected_loss(self) -> float:
        """E[loss] minus the irreducible noise term: 0.5 * sum(h * W^2)."""
        return 0.5 * float((self.h * self.weight.detach().float() ** 2).sum())


def _nqm_prepare(budget: dict, seed: int, device: torch.device) -> Prepared:
    import time

    torch.manual_seed(seed)
    model = NoisyQuadratic(budget["width"]).to(device)
    bs, steps, pace_s = budget["batch_size"], budget["steps"], budget["pace_ms"] / 1000
    scale = model.h.rsqrt()

    def batches(epoch: int) -> Iterator[Batch]:
        start = time.perf_counter()
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        for _ in range(steps):
            eps = torch.randn((bs, *scale.shape), generator=g).to(device) * scale
            yield eps, eps  # the target is unused: the loss needs only the residual
        # A simulated heavier model: the epoch lasts at least pace_ms (scheduler benchmarks).
        time.sleep(max(0.0, pace_s - (time.perf_counter() - start)))

    def loss_fn(residual: torch.Tensor, _target: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model.h * residual.float() ** 2).sum(dim=(1, 2)).mean()

    def evaluate(m: nn.Module) -> float:
        return m.expected_loss()

    return Prepared(model, bs, batches, evaluate, loss_fn, bs)

# ---------------------------------------------------------------------- graph (GNN) node classification
@lru_cache(maxsize=4)
def stochastic_block_model(nodes: int, blocks: int, degree: int, features: int, seed: int = 1234):
    """A seeded stochastic block model graph: `blocks` equal communities, an expected node degree
    of `degree` of which 80% falls inside the node's own block, and features that carry a weak
    class signal (a class mean plus unit noise), so a model that also reads the neighbours does
    clearly better than one that reads the node alone. Returns the symmetric normalised adjacency
    with self-loops D^-1/2 (A + I) D^-1/2 (sparse), the features, the labels and a train/test split
    (half the nodes each). The graph is part of the workload, not of the trial: fixed seed."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(nodes) % blocks
    y = y[torch.randperm(nodes, generator=g)]
    size = nodes / blocks
    p_in = min(1.0, 0.8 * degree / size)
    p_out = min(1.0, 0.2 * degree / max(nodes - size, 1))
    same = y[:, None] == y[None, :]
    prob = torch.where(same, torch.tensor(p_in), torch.tensor(p_out))
    upper = torch.triu(torch.rand(nodes, nodes, generator=g) < prob, diagonal=1)
    adj = (upper | upper.T).float() + torch.eye(nodes)
    d = adj.sum(1).rsqrt()
    norm = (d[:, None] * adj * d[None, :]).to_sparse()
    means = torch.randn(blocks, features, generator=g) * 0.3
    x = means[y] + torch.randn(nodes, features, generator=g)
    order = torch.randperm(nodes, generator=g)
    return norm, x, y, order[: nodes // 2], order[nodes // 2 :]


class GCN(nn.Module):
    """A two-layer graph convolutional network (Kipf & Welling 2017) in plain torch:
    logits = Â relu(Â X W1) W2, with Â the normalised adjacency held as a buffer."""

    def __init__(self, adjacency: torch.Tensor, features: int, width: int, classes: int):
        super().__init__()
        self.register_buffer("adjacency", adjacency)
        self.layer1 = nn.Linear(features, width)
        self.layer2 = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 throughout: sparse products have no bfloat16 autocast (the trial's GPU setting),
        # and mixing the two fails in the backward pass; the model is small.
        with torch.autocast(x.device.type, enabled=False):
            a = self.adjacency
            h = torch.relu(torch.sparse.mm(a, self.layer1(x.float())))
            return torch.sparse.mm(a, self.layer2(h))


def _gcn_prepare(budget: dict, seed: int, device: torch.device) -> Prepared:
    adjacency, x, y, train, test = stochastic_block_model(
        budget["nodes"], budget["blocks"], budget["degree"], budget["features"])
    torch.manual_seed(seed)
    model = GCN(adjacency, x.shape[1], budget["width"], budget["blocks"]).to(device)
    x_dev = x.to(device)
    target = torch.full_like(y, -100)  # cross_entropy ignores -100: the loss averages the train nodes
    target[train] = y[train]
    target = target.to(device)

    def batches(epoch: int) -> Iterator[Batch]:
        for _ in range(budget["steps"]):  # full-graph steps (the paper's GNN task trains full-batch)
            yield x_dev, target

    def loss_fn(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.float(), t, ignore_index=-100)

    @torch.no_grad()
    def evaluate(m: nn.Module) -> float:
        m.eval()
        wrong = (m(x_dev).argmax(1).cpu()[test] != y[test]).float().mean().item()
        m.train()
        return wrong

    return Prepared(model, len(train), batches, evaluate, loss_fn, len(train))


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
            _classification("fashion_mnist", lambda b: ResNet(1, 10, width=b["width"])),
            limits={"epochs": 1000, "train_subset": 60000, "test_subset": 10000, "batch_size": 8192, "width": 512},
        ),
        Workload(
            "fmnist_vit",
            "Vision transformer, patch 4 on 28x28 Fashion-MNIST (stands in for the paper's ViTs)",
            "test_error", "min",
            {"epochs": 2, "train_subset": 10000, "test_subset": 2000, "batch_size": 128,
             "width": 64},
            "cosine",
            _classification("fashion_mnist",
                            lambda b: ViT(dim=b["width"], depth=2, heads=4, patch=4)),
            limits={"epochs": 1000, "train_subset": 60000, "test_subset": 10000, "batch_size": 8192, "width": 2048},
        ),
        Workload(
            "ptb_lstm",
            "3-layer LSTM language model on Penn Treebank (the paper's RNN task)",
            "perplexity", "min",
            {"epochs": 2, "train_subset": 200000, "test_subset": 20000, "batch_size": 20,
             "width": 128, "bptt": 35},
            "step",
            _ptb_prepare,
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
            _classification("cifar100", lambda b: ResNet(3, 100, width=b["width"],
                                                          blocks_per_stage=2)),
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
            _nqm_prepare,
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
            "cosine",
            _gcn_prepare,
            limits={"epochs": 10000, "steps": 10000, "nodes": 5000, "blocks": 100, "degree": 1000,
                    "features": 4096, "width": 4096},
        ),
    )
}


BUILTIN = frozenset(_REGISTRY)
ENTRY_POINT_GROUP = "rootfree.workloads"
_loaded = False
_errors: list[dict[str, str]] = []


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


def load_plugins(reload: bool = False) -> None:
    """Loads the ``rootfree.workloads`` entry points once per process (the controller at start-up,
    every trial process on its first trial); a plugin that fails is logged and listed in
    :func:`plugin_errors`, never raised."""
    global _loaded, _errors
    if _loaded and not reload:
        return
    from optimizers.registry import load_entry_points, log

    for name in [n for n in _REGISTRY if n not in BUILTIN]:
        del _REGISTRY[name]
    loaded, errors = load_entry_points(ENTRY_POINT_GROUP, Workload, BUILTIN)
    for name, (w, path) in loaded.items():
        problem = _check_plugin(w)
        if problem:
            errors.append({"name": name, "source": path, "error": problem})
            log.error("workload plugin %r (%s) refused: %s", name, path, problem)
            continue
        _REGISTRY[name] = dataclasses.replace(w, plugin=path)
    _loaded, _errors = True, errors


def register(w: Workload) -> None:
    """Adds a workload under a name no one has taken (the controller's description of a plugin
    only the cluster's nodes have; see service.catalog.adopt)."""
    load_plugins()
    if w.name in _REGISTRY:
        raise ValueError(f"workload {w.name!r} exists")
    _REGISTRY[w.name] = w


def plugin_errors() -> list[dict[str, str]]:
    """The workload plugins refused in this process, each ``{"name", "source", "error"}``."""
    load_plugins()
    return list(_errors)


def names() -> list[str]:
    load_plugins()
    return list(_REGISTRY)


def get(name: str) -> Workload:
    load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown workload {name!r}; known: {', '.join(_REGISTRY)}") from None
