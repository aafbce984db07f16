"""The control plane's cost against raw Ray Tune: the same short trials through rootfree and
through a plain `Tuner.fit`, in one run, on one local Ray.

    python bench/throughput.py [--trials 500] [--cpus 2] [--only rootfree|tune]

rootfree: one study (sgd on `noisy_quadratic`, 1 epoch, stages [0.8 n, 0.2 n], at most `--cpus`
trials at once) submitted to a real `StudyRunner` (SQLite store, Ray Tune), submit -> completed.
Raw Tune: `Tuner.fit` of a function trainable that trains the same workload (`workers.run_trial`,
1 epoch) and reports once, `reuse_actors=True`, `max_concurrent_trials=--cpus`, the same n
configurations, with Tune's defaults (result files, experiment snapshots). Both are timed
from the first trial's start to the last trial's end (rootfree:
the store's started_at/finished_at; Tune: a callback), and also per 100 finishes (trials/s of each
block of 100, to show whether the rate decays as the run ages). Printed: trials/s of each, the
ratio, the per-100 rates and their spread (max/min - 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

BUDGET = {"epochs": 1, "pace_ms": 0}


def per_block(ends: list[float], start: float, block: int = 100) -> list[float]:
    """trials/s of each block of `block` finishes (the first from the first start)."""
    ends = sorted(ends)
    rates, prev = [], start
    for i in range(block - 1, len(ends), block):
        rates.append(block / max(ends[i] - prev, 1e-9))
        prev = ends[i]
    return rates


def run_rootfree(n: int, cpus: int) -> dict:
    from service.api.schemas import StudySpec
    from service.control.runner import StudyRunner
    from service.settings import Settings
    from service.store.study_store import StudyStore

    stage1 = int(n * 0.8)
    spec = StudySpec(name="throughput", workload="noisy_quadratic", optimizers=["sgd"],
                     protocol={"stages": [stage1, n - stage1], "top_k": 4, "seed": 0},
                     budget=BUDGET, max_concurrent_trials=cpus,
                     resources={"cpu": 1, "gpu": 0}).resolved()
    with tempfile.TemporaryDirectory() as tmp:
        store = StudyStore(f"sqlite:///{tmp}/bench.db")
        runner = StudyRunner(store, Settings(database_url=store.url, storage_path=f"{tmp}/runs",
                                             poll_interval_s=0.2))
        runner.start()
        t0 = time.time()
        sid = store.create_study(spec, None)[0].id
        while store.get_study(sid).status not in ("completed", "failed", "cancelled"):
            time.sleep(0.5)
        done = time.time()
        runner.stop()
        status = store.get_study(sid).status
        trials = store.trials(sid)
        store.engine.dispose()
    if status != "completed":
        raise SystemExit(f"rootfree: the study ended {status}")
    starts = [t.started_at.timestamp() for t in trials]
    ends = [t.finished_at.timestamp() for t in trials]
    return {"name": "rootfree", "n": len(trials), "start": min(starts), "end": max(ends),
            "ends": ends, "submit_to_completed_s": done - t0, "first_start_s": min(starts) - t0,
            "completed_after_s": done - max(ends)}


def run_tune(n: int, cpus: int) -> dict:
    from ray import tune
    from ray.tune import RunConfig, TuneConfig, Tuner

    from workers.trial import run_trial

    def trainable(config):
        out = run_trial({"workload": "noisy_quadratic", "optimizer": "sgd",
                         "hyperparameters": {"lr": config["lr"]}, "budget": BUDGET, "seed": 0})
        tune.report({"loss": out["metrics"].get("loss", float("nan"))})

    class Times(tune.Callback):
        def __init__(self):
            self.starts, self.ends = [], []

        def on_trial_start(self, iteration, trials, trial, **info):
            self.starts.append(time.time())

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ends.append(time.time())

    times = Times()
    # Tune's defaults, as a plain Tuner.fit has them (importing service.runner changed some)
    saved = {k: os.environ.pop(k) for k in ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_GLOBAL_CHECKPOINT_S",
                                            "TUNE_MAX_PENDING_TRIALS_PG") if k in os.environ}
    with tempfile.TemporaryDirectory() as tmp:
        tuner = Tuner(tune.with_resources(trainable, {"cpu": 1}),
                      param_space={"lr": tune.grid_search([10 ** (-4 + 3 * i / n) for i in range(n)])},
                      tune_config=TuneConfig(max_concurrent_trials=cpus, reuse_actors=True),
                      run_config=RunConfig(name="raw", storage_path=tmp, callbacks=[times], verbose=0))
        tuner.fit()
    os.environ.update(saved)
    return {"name": "raw Tune", "n": len(times.ends), "start": min(times.starts), "end": max(times.ends),
            "ends": times.ends}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--only", choices=["rootfree", "tune"])
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=args.cpus, object_store_memory=200 * 2**20, include_dashboard=False,
             log_to_driver=False, namespace="rootfree-bench")
    rows = []
    if args.only != "tune":
        rows.append(run_rootfree(args.trials, args.cpus))
    if args.only != "rootfree":
        rows.append(run_tune(args.trials, args.cpus))
    ray.shutdown()

    print(f"\n{args.trials} noisy_quadratic trials (1 epoch), {args.cpus} at once, local Ray with "
          f"{args.cpus} CPUs; first start -> last end")
    for r in rows:
        rate = r["n"] / (r["end"] - r["start"])
        blocks = per_block(r["ends"], r["start"])
        r["rate"] = rate
        spread = (max(blocks) / min(blocks) - 1) if blocks else float("nan")
        extra = (f"  (submit -> completed {r['submit_to_completed_s']:.1f} s: first start after "
                 f"{r['first_start_s']:.1f} s, completed {r['completed_after_s']:.1f} s after the last end)"
                 if "submit_to_completed_s" in r else "")
        print(f"{r['name']:<10} {r['n']:>5} trials {r['end'] - r['start']:>7.1f} s {rate:>7.2f} trials/s{extra}")
        print(f"{'':<10} per 100 finishes: {' '.join(f'{b:.2f}' for b in blocks)} trials/s "
              f"(max/min - 1 = {spread:.0%})")
    if len(rows) == 2:
        print(f"\nrootfree / raw Tune throughput: {rows[0]['rate'] / rows[1]['rate']:.2f}x (target >= 0.8)")


if __name__ == "__main__":
    main()
