"""Evaluation-level time (budget eval_every) and AlgoPerf's max_runtime (budget max_runtime_s)
in the trial loop: every workload takes both keys, built-in or plugin."""

import copy

import pytest

from workers import workloads
from workers.trial import run_trial

NQM = {"workload": "noisy_quadratic", "optimizer": "sgd", "hyperparameters": {"lr": 0.5}, "device": "cpu"}


def test_every_workload_takes_the_loop_keys_and_checks_them():
    for name in workloads.names():
        b = workloads.get(name).budget({"eval_every": 7, "max_runtime_s": 60})
        assert b["eval_every"] == 7 and b["max_runtime_s"] == 60
        assert "eval_every" not in workloads.get(name).budget(None)  # per-epoch stays the default
    with pytest.raises(ValueError, match="budget.eval_every"):
        workloads.get("noisy_quadratic").budget({"eval_every": 0})


def test_eval_every_records_an_evaluation_row_every_n_steps_and_at_the_end():
    out = run_trial({**NQM, "budget": {"epochs": 2, "steps": 5, "eval_every": 3}})
    assert out["status"] == "completed"
    evals = [e for h in out["history"] for e in h["evals"]]
    assert [e["global_step"] for e in evals] == [3, 6, 9, 10]  # every 3 steps, and the end
    assert [e["epoch"] for e in evals] == [1, 2, 2, 2]
    times = [e["train_time_s"] for e in evals]
    assert times == sorted(times) and times[0] > 0
    assert all(e["eval_time_s"] > 0 and e["loss"] is not None for e in evals)
    last = out["history"][-1]
    assert last["global_step"] == 10 and last["loss"] == evals[-1]["loss"]
    assert last["train_time_s"] == pytest.approx(evals[-1]["train_time_s"], abs=0.05)
    # accumulated training time excludes evaluation: below the wall time
    assert last["train_time_s"] + last["eval_time_s"] <= last["wall_time_s"] + 1e-6


def test_per_epoch_reports_stay_the_default_and_carry_the_clocks():
    out = run_trial({**NQM, "budget": {"epochs": 2, "steps": 4}})
    assert [h["global_step"] for h in out["history"]] == [4, 8]
    assert all("evals" not in h for h in out["history"])
    assert out["history"][1]["train_time_s"] > out["history"][0]["train_time_s"] > 0


def test_max_runtime_ends_the_trial_once_its_training_time_passes_it():
    out = run_trial({**NQM, "budget": {"epochs": 20, "steps": 2, "pace_ms": 400, "max_runtime_s": 1,
                                       "eval_every": 2}})
    assert out["status"] == "completed"
    assert len(out["history"]) < 20 and out["history"][-1]["max_runtime_reached"] is True
    assert out["history"][-1]["train_time_s"] > 1.0
    assert out["history"][-1]["evals"][-1]["global_step"] == out["history"][-1]["global_step"]


def test_a_resumed_trial_carries_its_clocks_and_steps_on():
    states = []

    def report(row, state, last):
        states.append(copy.deepcopy(state))  # as Ray's checkpoint would hold it

    cfg = {**NQM, "budget": {"epochs": 3, "steps": 4, "eval_every": 3}}
    full = run_trial(cfg, report=report)
    resumed = run_trial(cfg, resume=states[0])  # from the end of epoch 1
    steps = [e["global_step"] for h in resumed["history"] for e in h["evals"]]
    assert steps == [e["global_step"] for h in full["history"] for e in h["evals"]] == [3, 6, 9, 12]
    first = resumed["history"][0]["train_time_s"]
    assert resumed["history"][1]["train_time_s"] > first and resumed["history"][1]["global_step"] == 8
