"""The search's luck from recorded trials (service/results/search_luck.py): p_a_wins against a simulated
truth, and the search-space audit on a case where a verdict holds in one half of a range and flips in
the other (issue 32)."""

import numpy as np
import pytest

from service.api.schemas import StudySpec
from service.domain.spec import spec_json
from service.results import search_luck
from service.results.analysis import analyse
from service.results.report import verdict_table


def test_p_wins_exact_small_case():
    # a = {1, 3}, b = {2}, k = 1: a wins with probability 1/2; k = 2: 1 - (1/2)^2 = 3/4; a tie counts half
    a, b = np.array([1.0, 3.0]), np.array([2.0])
    assert search_luck.p_wins(a, b, 1) == pytest.approx(0.5)
    assert search_luck.p_wins(a, b, 2) == pytest.approx(0.75)
    assert search_luck.p_wins(np.array([2.0]), b, 3) == pytest.approx(0.5)
    assert search_luck.p_wins(b, a, 2) == pytest.approx(0.25)


def test_p_a_wins_against_a_simulated_truth():
    """Stage-1 trials of two optimizers from known distributions (larger is better): the truth is
    P(max of k fresh draws of a > max of k fresh draws of b), simulated; the estimate from 60 recorded
    trials each lands near it and its 90% band covers it about 90% of the time."""
    rng = np.random.default_rng(0)
    k, n = 10, 60
    truth = float(np.mean(rng.normal(0.3, 1, (400_000, k)).max(1) > rng.normal(0, 1, (400_000, k)).max(1)))
    covered, errors = 0, []
    reps = 100
    for r in range(reps):
        a, b = rng.normal(0.3, 1, n), rng.normal(0, 1, n)
        c = search_luck.pair_search_comparison(a, b, k, seed=r)
        assert c["lo"] <= c["p_a_wins"] <= c["hi"]
        covered += c["lo"] <= truth <= c["hi"]
        errors.append(c["p_a_wins"] - truth)
    print(f"truth {truth:.3f}, mean estimate error {np.mean(errors):+.3f}, band coverage {covered / reps:.2f}")
    assert abs(np.mean(errors)) < 0.05 and 0.75 <= covered / reps <= 1.0


def spec(optimizers=("sgd", "adamw"), seeds=6):
    return spec_json(StudySpec(name="luck", workload="noisy_quadratic", optimizers=list(optimizers),
                               search_spaces={o: {"lr": {"kind": "log_uniform", "low": 1e-4, "high": 1.0}}
                                              for o in optimizers},
                               protocol={"stages": [40], "top_k": 2, "seeds": seeds, "paired": True}).resolved())


def trial(opt, stage, index, objective, seed=0, lr=0.01):
    return {"optimizer": opt, "stage": stage, "index": index, "status": "completed", "objective": objective,
            "config": {"lr": lr}, "seed": seed, "history": []}


def test_the_audit_finds_a_verdict_that_flips_in_one_half_of_a_range():
    """sgd beats adamw at small learning rates (lr < 1e-2, the lower half of [1e-4, 1] in log scale) and
    loses at large ones; its best trials are small-lr ones, so the verdict says sgd; the audit finds it
    holds in the lower half and flips in the upper one."""
    s = spec()
    lrs = np.geomspace(1e-4, 1.0, 40)
    trials = []
    for i, lr in enumerate(lrs):
        low = lr < 1e-2
        trials.append(trial("sgd", 1, i, (0.10 if low else 0.60) + 0.001 * i, lr=float(lr)))
        trials.append(trial("adamw", 1, i, (0.30 if low else 0.40) + 0.001 * i, lr=float(lr)))
    for j in range(6):  # seed runs: sgd clearly better
        trials += [trial("sgd", 2, j, 0.10 + 0.01 * j, seed=j), trial("adamw", 2, j, 0.30 + 0.012 * j, seed=j)]
    a = analyse(s, {}, trials)
    (c,) = a["comparisons"]
    assert c["verdict"] == "sgd better than adamw"
    assert c["robustness"]["subspaces"] == 2 and c["robustness"]["agree"] == 1
    assert c["robustness"]["flips"] == ["lr upper half"]
    # the search-level line: in a 40-trial search sgd almost surely ends better (its best is 0.10)
    k40 = [x for x in a["search_comparisons"] if x["k"] == 40]
    assert k40 and k40[0]["p_a_wins"] > 0.9 and {"a", "b", "k", "p_a_wins", "lo", "hi"} <= set(k40[0])
    assert "robustness" in a["comparison_method"]
    page = verdict_table({"analysis": a, "ranking": ["sgd", "adamw"]})
    assert "holds in 1 of 2 sub-spaces (flips: lr upper half)" in page and "Search level (40-trial" in page


def test_an_unresolved_verdict_has_no_audit():
    s = spec()
    trials = [trial(o, 1, i, 0.1 * i, lr=10 ** (-4 + i / 10)) for o in ("sgd", "adamw") for i in range(40)]
    trials += [trial(o, 2, j, 0.5 + 0.01 * ((j * 7 + len(o)) % 5), seed=j) for o in ("sgd", "adamw") for j in range(6)]
    (c,) = analyse(s, {}, trials)["comparisons"]
    assert c["verdict"].startswith("not resolved") and c["robustness"] is None
