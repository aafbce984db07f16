"""What a workload's `prepare` returns for one trial (`Prepared`) and the batches it yields: the
types both the workload descriptions (workloads.py, no torch) and the built-ins' code
(builtin_workloads.py) name, here so neither imports the other for them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["Batch", "Prepared"]

Batch = tuple["torch.Tensor", "torch.Tensor"]


@dataclass
class Prepared:
    """One trial's model and data, ready to train."""

    model: nn.Module
    # B: the number of terms `loss_fn` averages over (examples; tokens for a language model; labelled
    # nodes for a full-graph GNN), passed to a root-free optimizer as `batch_size` (Sec. 3.1)
    batch_size: int
    train_batches: Callable[[int], Iterator[Batch]]  # epoch -> batches (seeded shuffle)
    evaluate: Callable[[nn.Module], float]  # the workload's metric on held-out data
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    examples_per_batch: int
