import pytest
import torch

from workers import run_trial, validate_config, workloads
from workers.datasets import DatasetNotFoundError

TINY = {
    "fmnist_cnn": {"epochs": 2, "train_subset": 1024, "test_subset": 500, "batch_size": 64,
                   "width": 8},
    "fmnist_vit": {"epochs": 2, "train_subset": 1024, "test_subset": 500, "batch_size": 64,
                   "width": 32},
    "ptb_lstm": {"epochs": 1, "train_subset": 8000, "test_subset": 2000, "batch_size": 20,
                 "width": 32, "bptt": 20},
    "noisy_quadratic": {"epochs": 2, "steps": 20, "batch_size": 16, "width": 8, "pace_ms": 0},
}
LR = {"sgd": 0.05, "adamw": 3e-3, "rmsprop": 1e-3, "shampoo": 1e-3, "rfrmsprop": 3e-2,
      "rfshampoo": 3e-3, "ifshampoo": 3e-3}


def _untrained_metric(workload_name, budget):
    w = workloads.get(workload_name)
    prepared = w.prepare(w.budget(budget), 0, torch.device("cpu"))
    return prepared.evaluate(prepared.model)


@pytest.mark.slow  # 24 short trainings, a minute in all: `make test-fast` leaves them out
@pytest.mark.parametrize("workload", list(TINY))
@pytest.mark.parametrize("optimizer", list(LR))
def test_each_workload_improves_with_each_optimizer(workload, optimizer):
    budget = TINY[workload]
    result = run_trial({"workload": workload, "optimizer": optimizer,
                        "hyperparameters": {"lr": LR[optimizer]}, "budget": budget, "seed": 0})
    metric = workloads.get(workload).metric
    assert result["status"] == "completed"
    assert len(result["history"]) == budget["epochs"]
    assert result["metrics"][metric] < _untrained_metric(workload, budget)
    row = result["history"][-1]
    for key in ("train_loss", "lr", "examples_per_s", "wall_time_s", "peak_memory_mb"):
        assert row[key] is not None and row[key] >= 0


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
def test_same_seed_same_metrics():
    cfg = {"workload": "fmnist_vit", "optimizer": "ifshampoo", "hyperparameters": {"lr": 3e-3},
           "budget": TINY["fmnist_vit"], "seed": 3}
    a, b = run_trial(cfg), run_trial(cfg)
    assert a["metrics"] == b["metrics"]
    c = run_trial({**cfg, "seed": 4})
    assert c["metrics"] != a["metrics"]


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
def test_nan_loss_ends_as_diverged():
    r = run_trial({"workload": "fmnist_vit", "optimizer": "sgd", "hyperparameters": {"lr": 1e8},
                   "budget": TINY["fmnist_vit"], "seed": 0})
    assert r["status"] == "diverged"
    assert len(r["history"]) >= 1


@pytest.mark.parametrize(
    "config,fragment",
    [
        ({"workload": "imagenet", "optimizer": "sgd"}, "Unknown workload 'imagenet'"),
        ({"workload": "fmnist_cnn", "optimizer": "adam"}, "Unknown optimizer 'adam'"),
        ({"workload": "fmnist_cnn", "optimizer": "sgd", "hyperparameters": {"beta2": 0.9}},
         "does not take hyperparameter(s) beta2"),
        ({"workload": "fmnist_cnn", "optimizer": "sgd", "budget": {"epochz": 1}},
         "unknown budget field(s) epochz"),
        ({"workload": "fmnist_cnn", "optimizer": "sgd", "budget": {"epochs": 0}},
         "budget epochs must be a positive integer"),
        ({"optimizer": "sgd"}, "missing 'workload'"),
    ],
)
def test_bad_configs_raise_before_training(config, fragment):
    with pytest.raises(ValueError) as e:
        validate_config(config)
    assert fragment in str(e.value)


def test_cifar100_missing_names_the_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("ROOTFREE_DATA_DIR", str(tmp_path))
    from workers import datasets

    datasets.cifar100.cache_clear()
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        run_trial({"workload": "cifar100_resnet", "optimizer": "sgd",
                   "budget": {"epochs": 1, "train_subset": 10}})


def test_registry_names():
    assert workloads.BUILTIN == {"fmnist_cnn", "fmnist_vit", "ptb_lstm", "cifar100_resnet",
                                 "noisy_quadratic", "sbm_gcn"}
    assert set(workloads.names()) >= workloads.BUILTIN  # and the installed plugins


def test_noisy_quadratic_pace_and_budget():
    cfg = {"workload": "noisy_quadratic", "optimizer": "adamw", "hyperparameters": {"lr": 0.05},
           "budget": {"epochs": 2, "pace_ms": 150}, "seed": 0}
    result = run_trial(cfg)
    assert all(h["epoch_time_s"] >= 0.15 for h in result["history"])
    assert run_trial({**cfg, "budget": {"epochs": 2, "pace_ms": 0}})["metrics"] == result["metrics"]
    with pytest.raises(ValueError, match="pace_ms must be a non-negative integer"):
        validate_config({**cfg, "budget": {"pace_ms": -1}})
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        validate_config({**cfg, "budget": {"steps": 0}})


def test_sbm_gcn_learns_well_above_chance():
    """The graph workload (standing in for the paper's GNN task): 4 blocks, so chance is 75%
    error; a GCN reads the neighbours and does far better than the node features alone."""
    budget = {"epochs": 4, "steps": 10, "nodes": 600}
    result = run_trial({"workload": "sbm_gcn", "optimizer": "adamw", "hyperparameters": {"lr": 1e-2},
                        "budget": budget, "seed": 0})
    assert result["status"] == "completed"
    assert result["metrics"]["test_error"] < 0.25  # chance: 0.75
    assert result["metrics"]["test_error"] < _untrained_metric("sbm_gcn", budget) - 0.4


def test_sbm_gcn_trains_under_bfloat16_autocast():
    """The trial's GPU setting (autocast to bfloat16), here on the CPU: sparse products have no
    bfloat16 autocast, so the GCN keeps float32 and the backward pass works."""
    w = workloads.get("sbm_gcn")
    prepared = w.prepare(w.budget({"nodes": 200}), 0, torch.device("cpu"))
    x, target = next(iter(prepared.train_batches(0)))
    with torch.autocast("cpu", torch.bfloat16):
        loss = prepared.loss_fn(prepared.model(x), target)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in prepared.model.parameters())
