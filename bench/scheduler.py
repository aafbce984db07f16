"""The multiplexing scheduler against the old one-group-at-a-time order, side by side in one run.

    python bench/scheduler.py [--slots 8] [--stages 12 8] [--cap 4] [--pace-ms 1000] [--late-after 10]

On one local Ray with `--slots` logical CPUs, three studies are submitted together (each: sgd,
adamw and ifshampoo on the noisy-quadratic workload, two-stage protocol `--stages`, at most `--cap`
trials at once, the third with priority 10), and a small study (one optimizer, 4 trials) arrives
`--late-after` seconds later. Each trial trains 2 epochs of at least `--pace-ms` each (a simulated
heavier model, so the slots, not this machine's 2 cores, are what the trials share). The same
submission runs twice through the real `StudyRunner` (SQLite store, Ray Tune): with
ROOTFREE_SCHEDULER=sequential (the order before the scheduler: one study, one (optimizer, stage)
group at a time) and with the fair-share scheduler. Reported per mode:

- makespan: first submission to the last trial's end;
- utilisation: busy slot-seconds (each trial from its start to its end, times its CPUs) divided by
  the slot-seconds the cluster offered over the makespan;
- the late study's wait: its submission to its first trial's start, in trial durations;
- when the priority study and the others finished.

The sequential mode is kinder to the old order than the old code was: it pays no Tune start-up
per group. Ratios are computed within this one run (these machines are noisy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def spec(name: str, optimizers: list[str], stages: list[int], cap: int, pace_ms: int, priority: int = 0):
    from service.schemas import StudySpec

    return StudySpec(name=name, workload="noisy_quadratic", optimizers=optimizers,
                     protocol={"stages": stages, "top_k": 2, "seed": 0},
                     budget={"epochs": 2, "pace_ms": pace_ms}, max_concurrent_trials=cap,
                     priority=priority, resources={"cpu": 1, "gpu": 0}).resolved()


def run_mode(mode: str, args) -> dict:
    from service.runner import StudyRunner
    from service.settings import Settings
    from service.store import StudyStore

    with tempfile.TemporaryDirectory() as tmp:
        store = StudyStore(f"sqlite:///{tmp}/bench.db")
        runner = StudyRunner(store, Settings(database_url=store.url, storage_path=f"{tmp}/runs",
                                             scheduler=mode, poll_interval_s=0.2))
        opts = ["sgd", "adamw", "ifshampoo"]
        t0 = time.time()
        big = [store.create_study(spec(f"study-{i}", opts, args.stages, args.cap, args.pace_ms,
                                       priority=10 if i == 2 else 0), None)[0].id for i in range(3)]
        runner.start()
        late: dict = {}

        def submit_late():
            time.sleep(args.late_after)
            late["submitted"] = time.time()
            late["id"] = store.create_study(spec("late", ["adamw"], [4], args.cap, args.pace_ms), None)[0].id

        threading.Thread(target=submit_late, daemon=True).start()
        ids = lambda: big + ([late["id"]] if "id" in late else [])  # noqa: E731
        while len(ids()) < 4 or any(store.get_study(s).status not in ("completed", "failed") for s in ids()):
            time.sleep(0.5)
        runner._stop.set()
        runner._thread.join(timeout=60)
        trials = {sid: store.trials(sid) for sid in ids()}
        failed = [s for s in ids() if store.get_study(s).status != "completed"]
        if failed:
            raise SystemExit(f"{mode}: studies {failed} did not complete: {store.get_study(failed[0]).error}")

    spans = [(t.started_at.timestamp(), t.finished_at.timestamp()) for ts in trials.values() for t in ts]
    end = max(e for _, e in spans)
    makespan = end - t0
    busy = sum(e - s for s, e in spans)
    # Warm-up: until the first trial starts, Ray starts the trial processes (each imports torch:
    # seconds on 2 cores); after it, what the scheduler itself leaves idle.
    first = min(s for s, _ in spans)
    durations = [e - s for s, e in spans]
    first_late = min(t.started_at.timestamp() for t in trials[late["id"]])
    finish = {sid: max(t.finished_at.timestamp() for t in ts) - t0 for sid, ts in trials.items()}
    return {"mode": mode, "trials": len(spans), "makespan_s": makespan,
            "utilisation": busy / (args.slots * makespan), "median_trial_s": statistics.median(durations),
            "warmup_s": first - t0, "utilisation_after_warmup": busy / (args.slots * (end - first)),
            "late_wait_s": first_late - late["submitted"],
            "priority_done_s": finish[big[2]], "others_done_s": max(finish[big[0]], finish[big[1]])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slots", type=int, default=8, help="logical CPUs of the local Ray")
    ap.add_argument("--stages", type=int, nargs="+", default=[12, 8])
    ap.add_argument("--cap", type=int, default=4, help="each study's max_concurrent_trials")
    ap.add_argument("--pace-ms", type=int, default=1000, help="minimum epoch time of a trial")
    ap.add_argument("--late-after", type=float, default=30.0, help="when the small study arrives (s)")
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=args.slots, object_store_memory=200 * 2**20, include_dashboard=False,
             log_to_driver=False, namespace="rootfree-bench")
    rows = [run_mode(mode, args) for mode in ("sequential", "fair")]
    ray.shutdown()

    old, new = rows
    print(f"\n{args.slots} slots; 3 studies x 3 optimizers x stages {args.stages} (cap {args.cap} each, "
          f"one with priority 10) + a late 4-trial study after {args.late_after:g} s; "
          f"2 epochs of >= {args.pace_ms} ms per trial")
    print(f"{'':<12}{'trials':>7}{'makespan s':>12}{'utilisation':>13}{'(after warm-up)':>16}{'warm-up s':>11}"
          f"{'late wait s':>13}{'(trials)':>10}{'prio done s':>13}{'others done s':>15}")
    for r in rows:
        print(f"{r['mode']:<12}{r['trials']:>7}{r['makespan_s']:>12.1f}{r['utilisation']:>13.2f}"
              f"{r['utilisation_after_warmup']:>16.2f}{r['warmup_s']:>11.1f}"
              f"{r['late_wait_s']:>13.1f}{r['late_wait_s'] / r['median_trial_s']:>10.2f}"
              f"{r['priority_done_s']:>13.1f}{r['others_done_s']:>15.1f}")
    print(f"\nfair / sequential: makespan {new['makespan_s'] / old['makespan_s']:.2f}x (target <= 0.8), "
          f"utilisation {new['utilisation']:.2f} ({new['utilisation_after_warmup']:.2f} after the "
          f"{new['warmup_s']:.1f} s warm-up; target >= 0.9), late study's wait "
          f"{new['late_wait_s'] / new['median_trial_s']:.2f} trial durations (target <= 1)")


if __name__ == "__main__":
    main()
