"""B (``Prepared.batch_size``) is the number of terms each built-in workload's loss averages over:
``B * loss`` is the sum of the per-term losses (examples; tokens for the LSTM; labelled nodes for
the GCN), the scale the root-free optimizers' curvature needs (the paper, Sec. 3.1)."""

import pytest
import torch

from workers import workloads
from workers.datasets import DatasetNotFoundError

TINY = {
    "fmnist_cnn": {"epochs": 1, "train_subset": 256, "test_subset": 100, "batch_size": 16, "width": 4},
    "fmnist_vit": {"epochs": 1, "train_subset": 256, "test_subset": 100, "batch_size": 16, "width": 16},
    "cifar100_resnet": {"epochs": 1, "train_subset": 256, "test_subset": 100, "batch_size": 16,
                        "width": 4},
    "ptb_lstm": {"epochs": 1, "train_subset": 4000, "test_subset": 500, "batch_size": 4, "width": 16,
                 "bptt": 6},
    "noisy_quadratic": {"epochs": 1, "steps": 2, "batch_size": 8, "width": 4, "pace_ms": 0},
    "sbm_gcn": {"epochs": 1, "steps": 1, "nodes": 60, "blocks": 3, "degree": 4, "features": 5,
                "width": 8},
}


def _terms(name, out, target):
    """Each term's (output, target) slice, as the workload's loss would see it on its own."""
    if name == "ptb_lstm":  # one term per token
        return [(out[i : i + 1, t : t + 1], target[i : i + 1, t : t + 1])
                for i in range(out.shape[0]) for t in range(out.shape[1])]
    if name == "sbm_gcn":  # one term per labelled node (the others carry ignore_index)
        return [(out[j : j + 1], target[j : j + 1]) for j in range(len(target)) if target[j] != -100]
    return [(out[i : i + 1], target[i : i + 1]) for i in range(out.shape[0])]  # one per example


def test_every_builtin_workload_is_covered():
    assert set(TINY) == set(workloads.BUILTIN)


@pytest.mark.parametrize("name", list(TINY))
def test_b_is_the_number_of_terms_the_loss_averages_over(name):
    w = workloads.get(name)
    try:
        prepared = w.prepare(w.budget(TINY[name]), 0, torch.device("cpu"))
    except DatasetNotFoundError as e:
        pytest.skip(str(e))
    model = prepared.model.eval()  # batch norm from running statistics: terms are independent
    inputs, target = next(iter(prepared.train_batches(0)))
    with torch.no_grad():
        out = model(inputs)
        loss = prepared.loss_fn(out, target)
        terms = [prepared.loss_fn(o, t) for o, t in _terms(name, out, target)]
    assert prepared.batch_size == len(terms)
    torch.testing.assert_close(prepared.batch_size * loss, torch.stack(terms).sum(), rtol=1e-5, atol=1e-5)
    if name == "ptb_lstm":
        assert prepared.batch_size == TINY[name]["batch_size"] * TINY[name]["bptt"]
