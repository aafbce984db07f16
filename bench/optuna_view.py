"""Runner throughput with the live Optuna view on and off, side by side in one run.

    python bench/optuna_view.py [--trials 24] [--reps 2] [--slots 2] [--epochs 3] [--pace-ms 0]

On one local Ray with `--slots` logical CPUs, the same study (adamw on the noisy-quadratic workload,
one stage of `--trials` trials, `--slots` at once, each trial `--epochs` epochs) runs through the real
`StudyRunner` (SQLite store, Ray Tune) with ROOTFREE_OPTUNA_VIEW off and on, alternating
`--reps` times (these machines are noisy); `--separate-file` adds the view in its own SQLite
file, `--actor-names` the view with named trial actors (ROOTFREE_TRIAL_ACTOR_NAMES: no actor
reuse). Reported per mode: trials per minute from the first trial's start to the last trial's end
in the store (the median over the reps), and with the view on, whether the Optuna view holds every
trial when the study has ended.
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


def run_once(tmp: Path, view: str, args, tag: str) -> tuple[float, int, float]:
    """(trials per minute, trials in the Optuna view) of one study run with the view on or off."""
    import optuna

    from service.api.schemas import StudySpec
    from service.control.runner import StudyRunner
    from service.settings import Settings
    from service.store.study_store import StudyStore

    store = StudyStore(f"sqlite:///{tmp / f'{tag}.db'}")
    view_url = f"sqlite:///{tmp / f'{tag}-optuna.db'}" if view == "file" else None
    settings = Settings(database_url=store.url, storage_path=str(tmp / f"runs-{tag}"), poll_interval_s=0.2,
                        optuna_view=view != "off", optuna_view_url=view_url, optuna_view_interval_s=1.0,
                        dashboard=False, trial_actor_names=view == "names")
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
        time.sleep(2.5 if view != "off" else 0)  # the follower's last pass (after the clock below stops)
    finally:
        follower = getattr(runner, "optuna_follower", None)
        busy = follower.busy_s if follower else 0.0
        runner.stop()
    trials = store.trials(sid)
    t0 = min(t.started_at for t in trials)
    t1 = max(t.finished_at for t in trials)
    rate = len(trials) / max((t1 - t0).total_seconds(), 1e-9) * 60
    in_view = 0
    if view != "off":
        url = view_url or store.url
        in_view = sum(len(s.trials) for s in (optuna.load_study(study_name=n, storage=url)
                                                for n in optuna.get_all_study_names(url)))
    store.engine.dispose()
    return rate, in_view, busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pace-ms", type=int, default=0)
    ap.add_argument("--separate-file", action="store_true",
                    help="also a third mode: the view in its own SQLite file (ROOTFREE_OPTUNA_VIEW_URL)")
    ap.add_argument("--actor-names", action="store_true",
                    help="also a mode with ROOTFREE_TRIAL_ACTOR_NAMES (a new actor per trial: no reuse)")
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=args.slots, object_store_memory=100 * 2**20, include_dashboard=False,
             log_to_driver=False)
    modes = ["off", "on"] + (["file"] if args.separate_file else []) + (["names"] if args.actor_names else [])
    rates: dict[str, list[float]] = {m: [] for m in modes}
    complete = True
    with tempfile.TemporaryDirectory() as d:
        for rep in range(args.reps):
            for view in modes if rep % 2 == 0 else modes[::-1]:
                rate, in_view, busy = run_once(Path(d), view, args, f"{view}{rep}")
                rates[view].append(rate)
                complete &= view == "off" or in_view == args.trials
                print(f"rep {rep} view {view:>4}: {rate:6.1f} trials/min"
                      + (f"  ({in_view} trials in the Optuna view, its thread busy {busy:.1f} s)"
                         if view != "off" else ""), flush=True)
    ray.shutdown()
    off = statistics.median(rates["off"])
    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.slots} slots, pace {args.pace_ms} ms, "
          f"{args.reps} reps (median)")
    labels = {"off": "view off", "on": "view on", "file": "view on, own SQLite file",
              "names": "view on, named trial actors"}
    for m in modes:
        r = statistics.median(rates[m])
        print(f"{labels[m]:>26}  {r:7.1f} trials/min  {r / off:6.3f} x off")
    print(f"target: view on >= 0.90 x off; view complete at the end: {complete}")


if __name__ == "__main__":
    main()
