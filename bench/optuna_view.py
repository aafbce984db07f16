"""Runner throughput with the live Optuna view on and off, side by side in one run.

    python bench/optuna_view.py [--trials 24] [--reps 2] [--slots 2] [--epochs 3] [--pace-ms 0]

On one local Ray with `--slots` logical CPUs, the same study (adamw on the noisy-quadratic workload,
one stage of `--trials` trials, `--slots` at once, each trial `--epochs` epochs) runs through the real
`StudyRunner` (SQLite store, Ray Tune) with ROOTFREE_OPTUNA_VIEW off and on, alternating
`--reps` times (these machines are noisy). Reported per mode: trials per minute from the first
trial's start to the last trial's end in the store (the median over the reps), and with the view
on, whether the Optuna view holds every trial when the study has ended.
The target: the view costs at most 10% of the throughput.
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


def run_once(tmp: Path, view: bool, args, tag: str) -> tuple[float, int]:
    """(trials per minute, trials in the Optuna view) of one study run with the view on or off."""
    import optuna

    from service.runner import StudyRunner
    from service.schemas import StudySpec
    from service.settings import Settings
    from service.store import StudyStore

    store = StudyStore(f"sqlite:///{tmp / f'{tag}.db'}")
    settings = Settings(database_url=store.url, storage_path=str(tmp / f"runs-{tag}"), poll_interval_s=0.2,
                        optuna_view=view, optuna_view_interval_s=1.0, dashboard=False)
    spec = StudySpec(name=f"bench {tag}", workload="noisy_quadratic", optimizers=["adamw"],
                     protocol={"stages": [args.trials], "top_k": 2, "seed": 1},
                     budget={"epochs": args.epochs, "pace_ms": args.pace_ms},
                     max_concurrent_trials=args.slots).resolved()
    sid = store.create_study(spec, None)[0].id
    runner = StudyRunner(store, settings)
    runner.start()
    try:
        while store.get_study(sid).status not in ("completed", "failed", "cancelled"):
            time.sleep(0.2)
        time.sleep(2.5 if view else 0)  # the follower's last pass (after the clock below stops)
    finally:
        runner.stop()
    trials = store.trials(sid)
    t0 = min(t.started_at for t in trials)
    t1 = max(t.finished_at for t in trials)
    rate = len(trials) / max((t1 - t0).total_seconds(), 1e-9) * 60
    in_view = 0
    if view:
        in_view = sum(len(s.trials) for s in (optuna.load_study(study_name=n, storage=store.url)
                                                for n in optuna.get_all_study_names(store.url)))
    store.engine.dispose()
    return rate, in_view


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pace-ms", type=int, default=0)
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=args.slots, object_store_memory=100 * 2**20, include_dashboard=False,
             log_to_driver=False)
    rates: dict[bool, list[float]] = {False: [], True: []}
    complete = True
    with tempfile.TemporaryDirectory() as d:
        for rep in range(args.reps):
            for view in (False, True) if rep % 2 == 0 else (True, False):
                rate, in_view = run_once(Path(d), view, args, f"{'on' if view else 'off'}{rep}")
                rates[view].append(rate)
                complete &= (not view) or in_view == args.trials
                print(f"rep {rep} view {'on ' if view else 'off'}: {rate:6.1f} trials/min"
                      + (f"  ({in_view} trials in the Optuna view)" if view else ""), flush=True)
    ray.shutdown()
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.slots} slots, pace {args.pace_ms} ms, "
          f"{args.reps} reps (median)")
    print(f"{'view off':>10}  {off:7.1f} trials/min")
    print(f"{'view on':>10}  {on:7.1f} trials/min")
    print(f"{'on / off':>10}  {on / off:7.3f}  (target >= 0.90)   view complete at the end: {complete}")


if __name__ == "__main__":
    main()
