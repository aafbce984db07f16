"""The digits workload's torch half: data and model (imported when a trial prepares one)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import torch
from torch import nn

from workers.plugin_api import Batch, Prepared

TEST_SIZE = 497  # 1300 training images, 497 held out


@lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardised train/test tensors; the split is part of the workload (fixed seed)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    test, train = perm[:TEST_SIZE], perm[TEST_SIZE:]
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-3)
    return (x[train] - mean) / std, y[train], (x[test] - mean) / std, y[test]


def prepare(budget: dict, seed: int, device: torch.device) -> Prepared:
    x, y, tx, ty = digits()
    torch.manual_seed(seed)
    width = budget["width"]
    model = nn.Sequential(nn.Linear(64, width), nn.Tanh(), nn.Linear(width, 10)).to(device)
    bs = budget["batch_size"]

    def batches(epoch: int) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - bs + 1, bs):  # full batches: B is the averaging size
            idx = perm[i : i + bs]
            yield x[idx].to(device), y[idx].to(device)

    @torch.no_grad()
    def evaluate(m: nn.Module) -> float:
        m.eval()
        wrong = (m(tx.to(device)).argmax(1).cpu() != ty).float().mean().item()
        m.train()
        return wrong

    return Prepared(model, bs, batches, evaluate, nn.functional.cross_entropy, bs)
