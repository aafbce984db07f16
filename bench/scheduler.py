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
- when the priority study and the others finished;
- utilisation three ways (busy slot-seconds over available slot-seconds), to separate what the
  runner loses from what this set-up forces (8 processes importing torch on 2 cores at first):
  (a) whole run: from the first submission to the last trial's end;
  (b) steady state: from the first moment every slot ran a trial to the last trial's start (after
      it only the tail's last trials run);
  (c) avoidable idle: slot-seconds during which some study had a runnable trial (its stage open,
      below its cap) that fit a free slot but no trial started within 0.5 s, after the warm-up
      (the first moment every slot ran a trial), over the slot-seconds of that period.

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
    from service.api.schemas import StudySpec

    return StudySpec(name=name, workload="noisy_quadratic", optimizers=optimizers,
                     protocol={"stages": stages, "top_k": 2, "seed": 0},
                     budget={"epochs": 2, "pace_ms": pace_ms}, max_concurrent_trials=cap,
                     priority=priority, resources={"cpu": 1, "gpu": 0}).resolved()


def run_mode(mode: str, args) -> dict:
    from service.control.runner import StudyRunner
    from service.settings import Settings
    from service.store.study_store import StudyStore

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
        submitted = {sid: store.get_study(sid).created_at for sid in ids()}
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
    util = utilisation(trials, submitted, args.slots, args.cap, t0)
    return {**util, "mode": mode, "trials": len(spans), "makespan_s": makespan,
            "utilisation": busy / (args.slots * makespan), "median_trial_s": statistics.median(durations),
            "warmup_s": first - t0, "utilisation_after_warmup": busy / (args.slots * (end - first)),
            "late_wait_s": first_late - late["submitted"],
            "priority_done_s": finish[big[2]], "others_done_s": max(finish[big[0]], finish[big[1]])}


def _ts(t) -> float:
    # SQLite hands back naive datetimes; they were written as UTC
    from datetime import UTC

    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def utilisation(trials: dict, submitted: dict, slots: int, cap: int, t0: float,
                grace_s: float = 0.5, dt: float = 0.05) -> dict:
    """The three utilisation figures (see the module's doc) from the trials' start/end times."""
    rows = []  # (study, start, end, ready): ready = when its stage opened
    for sid, ts in trials.items():
        stage_end = {}
        for t in ts:
            key = (t.optimizer, t.stage)
            stage_end[key] = max(stage_end.get(key, 0.0), _ts(t.finished_at))
        for t in ts:
            ready = _ts(submitted[sid]) if t.stage == 1 else stage_end[(t.optimizer, t.stage - 1)]
            rows.append((sid, _ts(t.started_at), _ts(t.finished_at), ready))
    end = max(r[2] for r in rows)
    last_start = max(r[1] for r in rows)
    busy = sum(e - s for _, s, e, _ in rows)
    n = int((end - t0) / dt) + 1
    full_at = None
    avoidable = 0.0
    idle_since = None
    for i in range(n):
        t = t0 + i * dt
        running: dict[str, int] = {}
        runnable: dict[str, int] = {}
        for sid, s, e, ready in rows:
            if s <= t < e:
                running[sid] = running.get(sid, 0) + 1
            elif ready <= t < s:
                runnable[sid] = runnable.get(sid, 0) + 1
        total = sum(running.values())
        if full_at is None and total >= slots:
            full_at = t
        demand = sum(min(k, max(0, cap - running.get(sid, 0))) for sid, k in runnable.items())
        idle_fit = min(slots - total, demand)
        if idle_fit > 0:
            idle_since = t if idle_since is None else idle_since
            if full_at is not None and t - idle_since >= grace_s:
                avoidable += idle_fit * dt
        else:
            idle_since = None
    full_at = full_at if full_at is not None else min(r[1] for r in rows)
    window = max(last_start - full_at, 1e-9)
    steady_busy = sum(max(0.0, min(e, last_start) - max(s, full_at)) for _, s, e, _ in rows)
    return {"util_whole": busy / (slots * (end - t0)), "util_steady": steady_busy / (slots * window),
            "avoidable_idle": avoidable / (slots * max(end - full_at, 1e-9)), "full_after_s": full_at - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slots", type=int, default=8, help="logical CPUs of the local Ray")
    ap.add_argument("--stages", type=int, nargs="+", default=[12, 8])
    ap.add_argument("--cap", type=int, default=4, help="each study's max_concurrent_trials")
    ap.add_argument("--pace-ms", type=int, default=1000, help="minimum epoch time of a trial")
    ap.add_argument("--late-after", type=float, default=30.0, help="when the small study arrives (s)")
    ap.add_argument("--modes", nargs="+", default=["sequential", "fair"], choices=["sequential", "fair"])
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=args.slots, object_store_memory=200 * 2**20, include_dashboard=False,
             log_to_driver=False, namespace="rootfree-bench")
    rows = [run_mode(mode, args) for mode in args.modes]
    ray.shutdown()

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
    print(f"\n{'':<12}{'utilisation: whole run':>24}{'steady state':>14}{'avoidable idle':>16}"
          f"{'(all slots busy after s)':>26}")
    for r in rows:
        print(f"{r['mode']:<12}{r['util_whole']:>24.3f}{r['util_steady']:>14.3f}{r['avoidable_idle']:>16.3f}"
              f"{r['full_after_s']:>26.1f}")
    print("targets: steady state >= 0.95, avoidable idle < 0.02")
    if len(rows) < 2:
        return
    old, new = rows
    print(f"\nfair / sequential: makespan {new['makespan_s'] / old['makespan_s']:.2f}x (target <= 0.8), "
          f"utilisation {new['utilisation']:.2f} ({new['utilisation_after_warmup']:.2f} after the "
          f"{new['warmup_s']:.1f} s warm-up; target >= 0.9), late study's wait "
          f"{new['late_wait_s'] / new['median_trial_s']:.2f} trial durations (target <= 1)")


if __name__ == "__main__":
    main()
