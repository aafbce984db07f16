"""The built-in workloads' data, models and training loops: what each one's `prepare` does.

Torch lives here, not in `workers.workloads`: the registry's descriptions (names, metrics, budgets,
limits) are read by the API process, which never trains and must not carry torch's memory; a
trial process imports this module when it prepares its first built-in workload.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import lru_cache

import torch
from torch import nn

from . import datasets
from .models import LSTMLanguageModel, ResNet, ViT
from .prepared import Batch, Prepared


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

    # the loss averages over every token of the batch: B = batch x bptt, not the batch
    return Prepared(model, bs * bptt, batches, evaluate, loss_fn, bs * bptt)


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


PREPARE: dict[str, Callable[[dict, int, torch.device], Prepared]] = {
    "fmnist_cnn": _classification("fashion_mnist", lambda b: ResNet(1, 10, width=b["width"])),
    "fmnist_vit": _classification("fashion_mnist", lambda b: ViT(dim=b["width"], depth=2, heads=4, patch=4)),
    "ptb_lstm": _ptb_prepare,
    "cifar100_resnet": _classification("cifar100", lambda b: ResNet(3, 100, width=b["width"], blocks_per_stage=2)),
    "noisy_quadratic": _nqm_prepare,
    "sbm_gcn": _gcn_prepare,
}
