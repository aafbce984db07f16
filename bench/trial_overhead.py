"""Per-trial scheduling overhead of a many-trial Ray Tune run of a tiny workload (issue #4).

    python bench/trial_overhead.py [--trials 100] [--concurrency 1 2] [--compare-no-reuse]

Runs N tiny `fmnist_cnn` trials (1 epoch, 64 training examples) through `workers.run_configs` on a
local Ray instance (num_cpus=2, 100 MiB object store) and reports

    overhead per trial = (wall time of Tuner.fit() x slots - sum of the trials' own training time) / N

where a trial's own training time is the `wall_time_s` of its last report (the training loop and
evaluation; model construction, checkpoint writes and everything Ray does are overhead), and
`slots` is the number of trials running at once (1 makes it exactly "total wall time minus the sum
of the trials' training time"). Ray start-up is outside the clock: a service starts Ray once.
A Tune run has a fixed start cost (experiment set-up, worker processes importing torch and loading
the dataset once) and a marginal cost per trial; each setting is therefore also run with
--small trials (default 10), which gives marginal = (wall(N) - wall(small)) x slots / (N - small)
- median training time, and the fixed cost. With --compare-no-reuse a --small run is repeated
with `reuse_actors=False` (a fresh process per trial), side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

BUDGET = {"epochs": 1, "train_subset": 64, "test_subset": 64, "batch_size": 32, "width": 4}


def configs(n: int, tag: str) -> list[dict]:
    return [{"workload": "fmnist_cnn", "optimizer": "sgd", "hyperparameters": {"lr": 0.01},
             "budget": BUDGET, "seed": i, "meta": {"index": i, "tag": tag}} for i in range(n)]


def measure(n: int, concurrency: int, reuse: bool) -> dict:
    from workers import tune as wt

    with tempfile.TemporaryDirectory() as storage:
        t0 = time.perf_counter()
        grid = wt.run_configs(configs(n, f"c{concurrency}"), name=f"overhead-c{concurrency}-r{int(reuse)}",
                              storage_path=storage, cpu=1, max_concurrent_trials=concurrency,
                              reuse_actors=reuse)
        wall = time.perf_counter() - t0
    errors = [r.error for r in grid if r.error is not None]
    if errors:
        raise SystemExit(f"{len(errors)} trial(s) failed: {errors[0]}")
    own = [r.metrics["wall_time_s"] for r in grid]
    pids = {r.metrics["pid"] for r in grid}
    slots = min(concurrency, n)
    return {"trials": n, "concurrency": concurrency, "reuse_actors": reuse, "wall_s": wall,
            "sum_training_s": sum(own), "median_training_s": statistics.median(own),
            "overhead_per_trial_s": (wall * slots - sum(own)) / n, "worker_processes": len(pids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100, help="trials per run (the paper's stage size)")
    ap.add_argument("--small", type=int, default=10, help="trials of the short run that isolates the fixed cost")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--compare-no-reuse", action="store_true",
                    help="also run each setting with reuse_actors=False (a fresh process per trial)")
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, log_to_driver=False)
    try:
        # Warm the data cache of this machine's page cache and Ray's worker pool once, untimed.
        measure(2, 1, True)
        rows, derived = [], []
        for c in args.concurrency:
            small, big = measure(args.small, c, True), measure(args.trials, c, True)
            rows += [small, big]
            slots = min(c, args.small)
            marginal = ((big["wall_s"] - small["wall_s"]) * slots / (args.trials - args.small)
                        - big["median_training_s"])
            fixed = small["wall_s"] - args.small * (marginal + small["median_training_s"]) / slots
            derived.append((c, marginal, fixed))
            if args.compare_no_reuse:
                rows.append(measure(args.small, c, False))
    finally:
        ray.shutdown()

    print(f"{'trials':>6} {'conc':>4} {'reuse':>5} {'wall s':>8} {'sum train s':>11} {'procs':>5} "
          f"{'overhead s/trial':>16}")
    for r in rows:
        print(f"{r['trials']:>6} {r['concurrency']:>4} {str(r['reuse_actors']):>5} {r['wall_s']:>8.2f} "
              f"{r['sum_training_s']:>11.2f} {r['worker_processes']:>5} {r['overhead_per_trial_s']:>16.3f}")
    for c, marginal, fixed in derived:
        print(f"concurrency {c}: marginal overhead {marginal:.3f} s/trial, fixed start cost {fixed:.2f} s per Tune run")
    if args.compare_no_reuse:
        for c in args.concurrency:
            on = next(r for r in rows if r["concurrency"] == c and r["reuse_actors"] and r["trials"] == args.small)
            off = next(r for r in rows if r["concurrency"] == c and not r["reuse_actors"])
            print(f"concurrency {c}, {args.small} trials: wall without reuse / with reuse = "
                  f"{off['wall_s'] / on['wall_s']:.2f}x")
    print("target (issue #4): overhead at most 0.3 s per trial on 2 cores")


if __name__ == "__main__":
    main()
