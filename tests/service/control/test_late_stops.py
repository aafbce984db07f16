"""Late stops of the algoperf ruleset on constructed logs: the bound (an upper bound on the fastest
optimizer's median time to target from the studies that have ended), the stop firing only past 4x
it, and the score never changing when trials are cut there."""

import math

import numpy as np
import pytest

from service.control.pruners import LateStopPruner, Report
from service.results import algoperf

S, O = 3, 2


def spec(optimizers=("a", "b"), seed=0):
    return {"optimizers": list(optimizers), "metric": "loss", "mode": "min", "protocol": {"seed": seed},
            "ruleset": {"kind": "algoperf", "version": "0.6", "studies": S, "trials_per_study": O,
                        "stop_late": True, "target": 1.0}}


def trial(tid, opt, index, evals, status="completed"):
    return {"id": tid, "optimizer": opt, "stage": 1, "index": index, "status": status,
            "history": [{"epoch": 1, "loss": evals[-1]["loss"] if evals else None, "evals": evals}]}


def curve(step_s, losses):
    return [{"global_step": k + 1, "train_time_s": step_s * (k + 1), "eval_time_s": 0.0, "loss": v}
            for k, v in enumerate(losses)]


def test_the_bound_comes_from_ended_studies_and_the_stop_fires_only_past_four_times_it():
    sp = spec()
    split = {o: algoperf.study_split(S * O, S, 0, o) for o in "ab"}
    # a's study j reaches the target at its second evaluation, at 10 (j + 1) s
    trials, tid = [], 0
    for o in "ab":
        for index in range(S * O):
            j = split[o][index]
            tid += 1
            reaches = o == "a"
            trials.append(trial(tid, o, index, curve(5.0 * (j + 1), [2.0, 0.5 if reaches else 1.5]),
                                status="running" if (o == "a" and j == 2) else "completed"))
    # a: studies 1 and 2 ended (10 s, 20 s), study 3 running: median(10, 20, inf) = 20; b: all misses
    assert algoperf.fastest_median_bound(sp, trials, 1.0) == 20.0
    assert not algoperf.late(80.0, 20.0) and algoperf.late(80.001, 20.0)
    assert not algoperf.late(1e9, math.inf)
    nothing_ended = [{**t, "status": "running"} for t in trials]
    assert algoperf.fastest_median_bound(sp, nothing_ended, 1.0) == math.inf

    from service.domain.spec import ResolvedSpec
    resolved = ResolvedSpec.model_validate({
        "name": "x", "workload": "noisy_quadratic", "optimizers": ["a", "b"], "metric": "loss", "mode": "min",
        "budget": {"epochs": 1}, "protocol": {"stages": [S * O], "method": "sobol"}, "ruleset": sp["ruleset"]})
    pruner = LateStopPruner.from_spec(resolved, lambda study_id, history=True: trials)
    assert pruner is not None and pruner.decides_at(1, 3)

    def report(t):
        return Report("s", "b", 1, 99, 1, 1.5, t)

    assert not pruner.decide(report(80.0), lambda: []).stop
    stop = pruner.decide(report(81.0), lambda: [])
    assert stop.stop and "late stop" in stop.reason
    off = ResolvedSpec.model_validate({**resolved.model_dump(), "ruleset": {**sp["ruleset"], "stop_late": False}})
    assert LateStopPruner.from_spec(off, lambda study_id, history=True: trials) is None


def _score(sp, trials, target):
    per = {}
    for o in sp["optimizers"]:
        mine = [t for t in trials if t["optimizer"] == o]
        times = []
        for group in algoperf.by_study(mine, S, O, sp["protocol"]["seed"], o):
            evals = [algoperf.evaluations(t["history"], "loss") for t in group]
            times.append(algoperf.study_time(evals, "loss", "min", target)[0])
        per[o] = algoperf.median_time(times)
    return algoperf.scores({"w": per}, sp["optimizers"])["scores"]


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
def test_cutting_trials_past_four_times_the_bound_never_changes_the_score():
    """Seeded random logs (3 optimizers, S = 3 studies of O = 2; a study's trials take the same
    time per step, as trials of one optimizer on one workload do); some studies ended, the rest
    cut at 4x the bound those give (every evaluation after it dropped, the harshest stop)."""
    rng = np.random.default_rng(33)
    fired = 0
    for case in range(300):
        sp = spec(("a", "b", "c"), seed=case)
        trials, tid = [], 0
        step = {(o, j): rng.uniform(0.5, 5.0) * (1 + "abc".index(o)) for o in "abc" for j in range(S)}
        for o in "abc":
            split = algoperf.study_split(S * O, S, case, o)
            for index in range(S * O):
                tid += 1
                rate = rng.uniform(0.05, 0.6)
                losses = [3.0 * math.exp(-rate * k) + rng.uniform(0, 0.2) for k in range(1, 25)]
                trials.append(trial(tid, o, index, curve(step[(o, split[index])], losses)))
        full = _score(sp, trials, 1.0)
        ended = {(o, j) for o in "abc" for j in range(S) if rng.random() < 0.6}
        split = {o: algoperf.study_split(S * O, S, case, o) for o in "abc"}
        now = [{**t, "status": "completed" if (t["optimizer"], split[t["optimizer"]][t["index"]]) in ended
                else "running"} for t in trials]
        bound = algoperf.fastest_median_bound(sp, now, 1.0)
        cut = []
        for t in now:
            evals = t["history"][0]["evals"]
            if t["status"] == "running" and math.isfinite(bound):
                kept = [e for e in evals if not algoperf.late(e["train_time_s"], bound)]
                fired += len(kept) < len(evals)
                evals = kept
            cut.append({**t, "history": [{"epoch": 1, "evals": evals}]})
        assert _score(sp, cut, 1.0) == pytest.approx(full), case
    assert fired > 50  # the stop did fire, often


def test_the_bound_reads_histories_again_only_when_a_trial_has_ended_since(monkeypatch):
    """Each refresh reads the trials without histories; the full read (every trial's history)
    happens only when the set of ended trials changed, not on every refresh."""
    from service.control.pruners import late as late_module
    from service.domain.spec import ResolvedSpec

    monkeypatch.setattr(late_module, "REFRESH_S", 0.0)
    sp = spec()
    trials = [trial(k + 1, o, k % (S * O), curve(5.0, [2.0, 0.5]), status="running")
              for k, o in enumerate(["a"] * (S * O) + ["b"] * (S * O))]
    resolved = ResolvedSpec.model_validate({
        "name": "x", "workload": "noisy_quadratic", "optimizers": ["a", "b"], "metric": "loss", "mode": "min",
        "budget": {"epochs": 1}, "protocol": {"stages": [S * O], "method": "sobol"}, "ruleset": sp["ruleset"]})
    full_reads = []

    def load(study_id, history=True):
        full_reads.append(history)
        return [t if history else {k: v for k, v in t.items() if k != "history"} for t in trials]

    pruner = LateStopPruner.from_spec(resolved, load)
    for _ in range(5):
        assert pruner.bound("s") == math.inf
    assert full_reads.count(True) <= 1
    for t in trials:
        if t["optimizer"] == "a":
            t["status"] = "completed"
    assert pruner.bound("s") == 10.0  # a's studies each reach the target at 10 s
    before = full_reads.count(True)
    for _ in range(5):
        assert pruner.bound("s") == 10.0
    assert full_reads.count(True) == before
