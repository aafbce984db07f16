"""A workload plugin: a one-hidden-layer MLP on scikit-learn's bundled 8x8 digits (1797 images,
10 classes; `load_digits` reads a file the package ships, no download).

This module is what the entry point loads: the description only. The torch half (data, model)
is in `_digits_torch` and imported when a trial prepares the workload, so a controller that lists
the catalog and validates studies never imports torch for it."""

from __future__ import annotations

from workers.plugin_api import Prepared, Workload


def prepare(budget: dict, seed: int, device) -> Prepared:
    from rootfree_examples._digits_torch import prepare as prepare_torch

    return prepare_torch(budget, seed, device)


WORKLOAD = Workload(
    name="digits_mlp",
    description="MLP (64-width-10, tanh) on scikit-learn's bundled 8x8 digits (plugin example)",
    metric="test_error",
    mode="min",
    default_budget={"epochs": 10, "batch_size": 32, "width": 32},
    schedule="cosine",
    prepare=prepare,
    limits={"epochs": 1000, "batch_size": 1300, "width": 1024},
)
