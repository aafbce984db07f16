"""Old vs new Shampoo baseline on the ViT workload, side by side in one run.

old: pytorch-optimizer's ``Shampoo`` (the baseline before issue 29: summed statistics from eps*I,
     no tunable EMA, no grafting), with the keyword mapping the registry used
     (``matrix_eps=damping``, ``preconditioning_compute_steps=update_every``). It is imported only
     here, and only if ``pytorch-optimizer`` is installed (the project no longer depends on it).
new: ``optimizers.Shampoo`` (the paper's root-based Shampoo, Fig. 5 left, as the authors ran
     Distributed Shampoo).

Both get the same budget: a small learning-rate grid on seed 0 (the same number of trials each),
then ``--seeds`` fresh seeds at each one's best lr. Every trial runs in its own process (the
workers' ``run_trial``: the same training loop, schedule and evaluation), so the peak resident
memory it reports (ru_maxrss) is that trial's. Prints per optimizer the seed mean +- std of the
test error, s/epoch and peak memory, and the new/old ratios.

    PYTHONPATH=$PWD nice python bench/shampoo_old_vs_new.py [--seeds 4] [--epochs 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time

OLD, NEW = "shampoo-old", "shampoo"
GRID = {OLD: [3e-4, 1e-3, 3e-3, 1e-2], NEW: [1e-4, 3e-4, 1e-3, 3e-3]}
FIXED = {OLD: {"momentum": 0.9, "damping": 1e-6, "update_every": 2},
         NEW: {"momentum": 0.9, "damping": 1e-6, "update_every": 2, "beta2": 0.01,
               "grafting": "none"}}


def _register_old() -> None:
    """Adds pytorch-optimizer's Shampoo to this process's registry as ``shampoo-old``."""
    import optimizers
    from optimizers.registry import _REGISTRY, OptimizerSpec

    def factory(params, lr=1e-3, momentum=0.9, weight_decay=0.0, damping=1e-6, update_every=1):
        from pytorch_optimizer import Shampoo

        return Shampoo(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                       matrix_eps=damping, preconditioning_compute_steps=update_every)

    optimizers.names()  # load the plugins first: loading drops names that are not built in
    _REGISTRY[OLD] = OptimizerSpec(OLD, "pytorch-optimizer's Shampoo (the old baseline)",
                                   ("lr", "momentum", "weight_decay", "damping", "update_every"),
                                   factory)


def _trial(args: tuple) -> dict:
    import torch

    name, lr, seed, budget = args
    torch.set_num_threads(1)
    if name == OLD:
        _register_old()
    from workers import run_trial

    t0 = time.perf_counter()
    r = run_trial({"workload": "fmnist_vit", "optimizer": name, "seed": seed, "budget": budget,
                   "hyperparameters": {"lr": lr, **FIXED[name]}})
    hist = r["history"]
    return {"name": name, "lr": lr, "seed": seed, "status": r["status"],
            "error": r["metrics"].get("test_error"),
            "s_per_epoch": statistics.mean(h["epoch_time_s"] for h in hist) if hist else None,
            "peak_mb": max((h["peak_memory_mb"] for h in hist), default=None),
            "wall_s": time.perf_counter() - t0}


def _run(pool, jobs):
    return pool.map(_trial, jobs, chunksize=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    try:
        import pytorch_optimizer  # noqa: F401
    except ImportError:
        sys.exit("pytorch-optimizer is not installed: the old Shampoo cannot run here "
                 "(pip install pytorch-optimizer, or measure it from an older checkout)")
    budget = {"epochs": a.epochs, "train_subset": a.train_subset, "test_subset": 1000,
              "width": a.width, "batch_size": 64}
    print(f"fmnist_vit budget={budget}; lr grid on seed 0, then seeds 1..{a.seeds} at the best lr")
    ctx = mp.get_context("spawn")
    with ctx.Pool(a.workers, maxtasksperchild=1) as pool:  # a fresh process per trial: clean peak RSS
        grid = _run(pool, [(n, lr, 0, budget) for n in (OLD, NEW) for lr in GRID[n]])
        best = {}
        for n in (OLD, NEW):
            rows = [g for g in grid if g["name"] == n]
            for g in rows:
                print(f"  grid {n:12s} lr={g['lr']:.0e} status={g['status']} error={g['error']}")
            ok = [g for g in rows if g["error"] is not None]
            best[n] = min(ok, key=lambda g: g["error"])["lr"] if ok else rows[0]["lr"]
        runs = _run(pool, [(n, best[n], s, budget) for n in (OLD, NEW) for s in range(1, a.seeds + 1)])
    summary = {}
    for n in (OLD, NEW):
        rows = [r for r in runs if r["name"] == n]
        errs = [r["error"] for r in rows if r["error"] is not None]
        summary[n] = {
            "mean": statistics.mean(errs) if errs else float("nan"),
            "std": statistics.stdev(errs) if len(errs) > 1 else float("nan"),
            "diverged": sum(r["error"] is None for r in rows),
            "s_epoch": statistics.mean(r["s_per_epoch"] for r in rows),
            "peak": statistics.mean(r["peak_mb"] for r in rows),
        }
        s = summary[n]
        print(f"{n:12s} lr={best[n]:.0e} test error {s['mean']:.3f} +- {s['std']:.3f} "
              f"(n={len(errs)}, diverged {s['diverged']}) {s['s_epoch']:.2f} s/epoch "
              f"peak {s['peak']:.0f} MB")
    o, w = summary[OLD], summary[NEW]
    print(f"new/old: s/epoch x{w['s_epoch'] / o['s_epoch']:.2f}, peak memory x{w['peak'] / o['peak']:.2f}, "
          f"test error {w['mean'] - o['mean']:+.3f}")


if __name__ == "__main__":
    main()
