"""Pairwise verdicts from seed runs (service/results/verdicts.py) against hand-computed cases, their place in
the report, the CLI and the export, and paired seed runs that really share data and initialisation."""

import copy
import dataclasses
import io
import math

import numpy as np
import pytest
import torch
from rich.console import Console
from scipy import stats

from service.api.schemas import StudySpec
from service.cli import render
from service.control.stages import seed_run_seeds
from service.domain.spec import load_spec, spec_json
from service.results import verdicts
from service.results.analysis import analyse
from service.results.report import ranking_text, verdict_table
from workers import run_trial, workloads


def runs(values):
    return [(1000 + i, v) for i, v in enumerate(values)]


def test_holm_against_a_hand_computation():
    # p = 0.01, 0.04, 0.03, None: sorted 0.01, 0.03, 0.04 (m = 3) -> 0.03, max(0.03, 2 x 0.03) = 0.06,
    # max(0.06, 1 x 0.04) = 0.06; None is no hypothesis of the family
    assert verdicts.holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert verdicts.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2 x 0.8 capped at 1, then the max


def test_resolved_case_against_a_hand_computation():
    # a = 1..4, b = 5..8: diff = -4; s_a^2 = s_b^2 = 5/3, se = sqrt(5/6) = 0.9128709; Hsu's df =
    # min(4, 4) - 1 = 3: half-width = t(0.975, 3) 3.1824463 * se = 2.9051627; t = 4.3817805 -> p =
    # 2 P(T_3 > 4.3817805) = 0.0220060
    c = verdicts.compare("rfrmsprop", runs([1, 2, 3, 4]), "rmsprop", runs([5, 6, 7, 8]), "min")
    assert c["diff"] == -4.0
    assert math.isclose(c["lo"], -4 - 2.9051627, abs_tol=1e-6) and math.isclose(c["hi"], -4 + 2.9051627, abs_tol=1e-6)
    assert math.isclose(c["p"], 2 * stats.t.sf(4 / math.sqrt(5 / 6), 3)) and math.isclose(c["p"], 0.0220060,
                                                                                            abs_tol=1e-6)
    assert c["verdict"] == "rfrmsprop better than rmsprop"  # lower is better
    assert set(c) == {"a", "b", "diff", "lo", "hi", "p", "verdict", "seeds_needed"}
    # in max mode the same numbers make the other optimizer better, named first
    c = verdicts.compare("rfrmsprop", runs([1, 2, 3, 4]), "rmsprop", runs([5, 6, 7, 8]), "max")
    assert c["verdict"] == "rmsprop better than rfrmsprop" and c["diff"] == -4.0
    # the interval and p are one test: p < 0.05 exactly when the interval excludes 0
    rng = np.random.default_rng(0)
    for _ in range(200):
        na, nb = rng.integers(2, 9, 2)
        c = verdicts.compare("a", runs(list(rng.normal(0, 1, na))), "b", runs(list(rng.normal(1, 2, nb))), "min")
        assert (c["p"] < 0.05) == (c["lo"] > 0 or c["hi"] < 0)


def power(diff, variance, n, level=0.05):
    """The t test's power with n runs each (n - 1 df), from scipy.stats' noncentral t."""
    ncp, crit = diff / math.sqrt(variance / n), stats.t.ppf(1 - level / 2, n - 1)
    return stats.nct.sf(crit, n - 1, ncp) + stats.nct.cdf(-crit, n - 1, ncp)


def test_not_resolved_case_says_so_and_estimates_seeds():
    # a = 1..3, b = 4..6: diff -3, se = sqrt(2/3), Hsu's df 2: t = 3.674235, p = 0.0668 -> not resolved
    c = verdicts.compare("sgd", runs([1, 2, 3]), "adamw", runs([4, 5, 6]), "min")
    half = stats.t.ppf(0.975, 2) * math.sqrt(2 / 3)
    assert math.isclose(c["lo"], -3 - half) and math.isclose(c["hi"], -3 + half)
    assert c["p"] == pytest.approx(2 * stats.t.sf(3 / math.sqrt(2 / 3), 2)) and c["p"] > 0.05
    assert c["verdict"] == "not resolved with 3 seeds"
    # effect 3 / sqrt(2) per unit: the t test's power reaches 0.8 at 5 runs each, not at 4
    assert c["seeds_needed"] == 5 and power(3, 2, 5) >= 0.8 > power(3, 2, 4)
    # noisy seeds: diff 0.03, s_a^2 + s_b^2 = 0.0075: the normal approximation says
    # (1.959964 + 0.841621)^2 * 0.0075 / 0.0009 = 65.4; the t test's own power needs a few more
    a, b = [0.30, 0.35, 0.40, 0.25, 0.30], [0.25, 0.30, 0.35, 0.20, 0.35]
    c = verdicts.compare("sgd", runs(a), "adamw", runs(b), "min")
    assert c["verdict"] == "not resolved with 5 seeds" and c["lo"] < 0 < c["hi"] and c["p"] > 0.05
    n = c["seeds_needed"]
    assert 66 <= n <= 70 and power(0.03, 0.0075, n) >= 0.8 > power(0.03, 0.0075, n - 1)
    # one run each: a difference, no interval, no verdict
    c = verdicts.compare("sgd", runs([1.0]), "adamw", runs([2.0]), "min")
    assert c["diff"] == -1.0 and c["lo"] is None and c["p"] is None and c["verdict"] == "not resolved with 1 seeds"


def test_paired_case_against_a_hand_computation():
    # per-seed differences d = -0.5 - 0.1 i, i = 0..5: mean -0.75, s_d = sqrt(0.035) = 0.1870829,
    # half-width = t(0.975, 5) 2.5705818 * 0.1870829 / sqrt(6) = 0.1963314; p: the paired t test
    a = [1, 2, 3, 4, 5, 6]
    b = [x + 0.5 + 0.1 * i for i, x in enumerate(a)]
    c = verdicts.compare("rfrmsprop", runs(a), "rmsprop", runs(b), "min", paired=True)
    assert math.isclose(c["diff"], -0.75)
    assert math.isclose(c["lo"], -0.75 - 0.1963314, abs_tol=1e-6) and math.isclose(c["hi"], -0.75 + 0.1963314,
                                                                                   abs_tol=1e-6)
    assert math.isclose(c["p"], stats.ttest_rel(a, b).pvalue) and c["verdict"] == "rfrmsprop better than rmsprop"
    # unpaired, the same samples are far from resolved: the seed-to-seed spread swamps 0.75
    u = verdicts.compare("rfrmsprop", runs(a), "rmsprop", runs(b), "min")
    assert u["verdict"] == "not resolved with 6 seeds"
    # pairs are matched by seed, not by position; a seed one side lacks is left out
    shuffled = list(reversed(runs(b))) + [(5, 100.0)]
    assert verdicts.compare("x", runs(a), "y", shuffled, "min", paired=True)["p"] == c["p"]


def test_three_optimizers_six_paired_seeds_can_resolve_after_holm():
    # the floor the sign-flip test had: 2/64 x 3 = 0.094 for every pair, whatever the data
    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    comps = verdicts.compare_runs({"x": a, "y": [v + 1.0 + 0.05 * i for i, v in enumerate(a)],
                                   "z": [v + 2.0 - 0.05 * i for i, v in enumerate(a)]}, paired=True)
    assert [c["verdict"] for c in comps] == ["x better than y", "x better than z", "y better than z"]
    assert all(c["p_adjusted"] < 0.05 and c["p_adjusted"] >= c["p"] for c in comps)
    assert set(comps[0]) == {"a", "b", "diff", "lo", "hi", "p", "p_adjusted", "verdict", "seeds_needed"}


def test_compare_runs_validates_its_arguments():
    with pytest.raises(ValueError, match="mode"):
        verdicts.compare_runs({"a": [1, 2]}, mode="best")
    with pytest.raises(ValueError, match="alpha"):
        verdicts.compare_runs({"a": [1, 2]}, alpha=1.5)
    with pytest.raises(ValueError, match="runs\\['b'\\]"):
        verdicts.compare_runs({"a": [1, 2], "b": ["x", 2]})
    assert verdicts.compare_runs({"a": [1.0, 2.0]}) == []
    # a failed run (NaN) is left out; paired, its pair with it
    (c,) = verdicts.compare_runs({"a": [1.0, 2.0, float("nan"), 4.0], "b": [2.0, 3.5, 3.0, 5.0]}, paired=True)
    assert c["diff"] == pytest.approx(-1.1666667)


def spec(**protocol):
    """A study's spec as the store keeps it (what the results layer reads)."""
    return spec_json(StudySpec(name="v", workload="noisy_quadratic", optimizers=["sgd", "rfrmsprop", "adamw"],
                               protocol={"stages": [2], "top_k": 2, "seed": 3, **protocol}).resolved())


def trial(opt, stage, index, objective, seed, status="completed"):
    return {"optimizer": opt, "stage": stage, "index": index, "status": status, "objective": objective,
            "config": {}, "seed": seed, "history": []}


def test_analysis_serves_comparisons_and_says_why_there_are_none():
    s = spec(seeds=4)
    trials = [trial(o, 1, i, 1.0 + i, 3) for o in s["optimizers"] for i in range(2)]
    for j, seed in enumerate([11, 12, 13, 14]):
        trials += [trial("sgd", 2, j, 1.0 + j, seed), trial("rfrmsprop", 2, j, 9.0 + j, seed),
                   trial("adamw", 2, j, 1.1 + j, seed)]
    trials.append(trial("adamw", 2, 4, None, 15, status="diverged"))
    a = analyse(s, {}, trials)
    pairs = {(c["a"], c["b"]): c for c in a["comparisons"]}
    assert list(pairs) == [("sgd", "rfrmsprop"), ("sgd", "adamw"), ("rfrmsprop", "adamw")]
    assert pairs[("sgd", "rfrmsprop")]["verdict"] == "sgd better than rfrmsprop"
    assert pairs[("sgd", "adamw")]["verdict"] == "not resolved with 4 seeds"
    assert "Welch" in a["comparison_method"]["interval"] and a["no_verdict"] is None
    assert a["comparison_method"]["multiplicity"] == "holm"
    data = {"analysis": a, "ranking": ["sgd", "adamw", "rfrmsprop"]}
    page = verdict_table(data)
    assert "sgd better than rfrmsprop" in page and "not resolved with 4 seeds" in page
    assert ranking_text(data) == "sgd ≈ adamw &gt; rfrmsprop"
    # no seed runs: no comparisons, and the reason
    none = analyse(spec(), {}, [t for t in trials if t["stage"] == 1])
    assert none["comparisons"] == [] and "no seed runs" in none["no_verdict"]
    assert "No verdict is possible" in verdict_table({"analysis": none, "ranking": []})


def test_cli_verdict_table_and_export_comparisons():
    s = spec(seeds=4)
    body = {"spec": s, "optimizers": [
        {"optimizer": "sgd", "seed_runs": {"values": [1.0, 2.0, 3.0, 4.0], "seeds": [1, 2, 3, 4]}},
        {"optimizer": "rfrmsprop", "seed_runs": {"values": [5.0, 6.0, 7.0, 8.0], "seeds": [5, 6, 7, 8]}},
        {"optimizer": "adamw", "seed_runs": None}]}
    assert [c["verdict"] for c in verdicts.export_comparisons(s, body["optimizers"])] == ["sgd better than rfrmsprop"]
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=False).print(render.verdict_table(body))
    assert "sgd better than rfrmsprop" in out.getvalue() and "0.022" in out.getvalue()
    out = io.StringIO()
    Console(file=out, width=200).print(render.verdict_table({"spec": spec(), "optimizers": []}))
    assert "No verdict is possible" in out.getvalue()


def test_paired_studies_share_seed_run_seeds_and_unpaired_do_not():
    paired, unpaired = spec(seeds=3, paired=True), spec(seeds=3)
    seeds = [seed_run_seeds(load_spec(paired), o) for o in paired["optimizers"]]
    assert seeds[0] == seeds[1] == seeds[2] and len(set(seeds[0])) == 3
    seeds = [seed_run_seeds(load_spec(unpaired), o) for o in unpaired["optimizers"]]
    assert all(len(s) == 3 for s in seeds) and len({x for s in seeds for x in s}) == 9
    assert 3 not in {x for s in seeds for x in s}  # never the search trials' seed


def test_paired_seed_runs_share_data_order_and_initialisation(monkeypatch):
    """Two optimizers' seed runs with the same paired seed start from identical weights and see
    the same batches in the same order; unpaired seeds do not."""
    w = workloads.get("fmnist_cnn")
    seen: list[dict] = []

    def recording(budget, seed, device):
        prepared = w.prepare(budget, seed, device)
        record = {"init": copy.deepcopy(prepared.model.state_dict()), "batches": []}
        seen.append(record)
        inner = prepared.train_batches

        def batches(epoch):
            for xb, yb in inner(epoch):
                record["batches"].append((epoch, xb.clone(), yb.clone()))
                yield xb, yb

        return dataclasses.replace(prepared, train_batches=batches)

    monkeypatch.setitem(workloads._REGISTRY, "fmnist_cnn", dataclasses.replace(w, prepare=recording))
    budget = {"epochs": 2, "train_subset": 256, "test_subset": 100, "batch_size": 64, "width": 4}
    s = StudySpec(name="p", workload="fmnist_cnn", optimizers=["sgd", "rfrmsprop"],
                  protocol={"stages": [2], "top_k": 2, "seeds": 2, "paired": True}).resolved()
    for opt, lr in (("sgd", 0.05), ("rfrmsprop", 0.01)):
        run_trial({"workload": "fmnist_cnn", "optimizer": opt, "hyperparameters": {"lr": lr}, "budget": budget,
                   "seed": seed_run_seeds(s, opt)[0], "device": "cpu"})
    a, b = seen
    assert a["init"].keys() == b["init"].keys()
    assert all(torch.equal(a["init"][k], b["init"][k]) for k in a["init"])
    assert len(a["batches"]) == len(b["batches"]) == 8
    for (ea, xa, ya), (eb, xb, yb) in zip(a["batches"], b["batches"], strict=True):
        assert ea == eb and torch.equal(xa, xb) and torch.equal(ya, yb)
    # unpaired: each optimizer its own seed, so its own initialisation and data order
    u = s.model_copy(update={"protocol": s.protocol.model_copy(update={"paired": False})})
    seen.clear()
    for opt in ("sgd", "rfrmsprop"):
        run_trial({"workload": "fmnist_cnn", "optimizer": opt, "hyperparameters": {"lr": 0.01}, "budget": budget,
                   "seed": seed_run_seeds(u, opt)[0], "device": "cpu"})
    a, b = seen
    assert not all(torch.equal(a["init"][k], b["init"][k]) for k in a["init"])
    assert not torch.equal(a["batches"][0][2], b["batches"][0][2])
