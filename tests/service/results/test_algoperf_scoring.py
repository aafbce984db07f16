"""AlgoPerf's scoring arithmetic (service/results/algoperf.py) on constructed per-study times,
against hand computations: the earliest-evaluation trial of a study, the median over studies with
misses, the 4x rule, the profile on 100 points in [1, 4] and its trapezoid score / 3."""

import math

import pytest

from service.results import algoperf

INF = math.inf


def ev(*pairs):
    """Evaluations from (train_time_s, loss) pairs."""
    return [{"global_step": 10 * (i + 1), "train_time_s": t, "eval_time_s": 0.1 * (i + 1), "loss": v}
            for i, (t, v) in enumerate(pairs)]


def test_a_study_takes_the_trial_that_reaches_the_target_at_the_earliest_evaluation():
    slow_steps = ev((10, 3.0), (20, 2.0), (30, 0.9))  # reaches at evaluation 2, at 30 s
    fast_steps = ev((40, 2.0), (50, 0.8))  # reaches at evaluation 1 but later in time
    assert algoperf.study_time([slow_steps, fast_steps], "loss", "min", 1.0) == (50.0, 1)
    # a tie on the index: the first trial in order
    assert algoperf.study_time([ev((5, 2.0), (7, 0.5)), ev((1, 2.0), (2, 0.5))], "loss", "min", 1.0) == (7.0, 0)
    assert algoperf.study_time([ev((1, 2.0)), ev((1, math.nan))], "loss", "min", 1.0) == (INF, None)
    assert algoperf.study_time([], "loss", "min", 1.0) == (INF, None)
    # max mode: at or above
    assert algoperf.study_time([[{"train_time_s": 3.0, "acc": 0.9}]], "acc", "max", 0.9) == (3.0, 0)


def test_evaluations_read_the_eval_rows_or_else_one_per_epoch():
    hist = [{"epoch": 1, "loss": 2.0, "evals": ev((1, 3.0), (2, 2.0))},
            {"epoch": 2, "loss": 0.5, "evals": ev((3, 1.0), (4, 0.5))}]
    assert [e["train_time_s"] for e in algoperf.evaluations(hist, "loss")] == [1, 2, 3, 4]
    old = [{"epoch": 1, "loss": 2.0, "wall_time_s": 5.0}]
    assert algoperf.evaluations(old, "loss")[0]["train_time_s"] == 5.0


def test_median_over_studies_is_numpys_and_a_miss_in_the_middle_is_a_miss():
    assert algoperf.median_time([3.0, 1.0, 2.0]) == 2.0
    assert algoperf.median_time([1.0, 2.0, INF]) == 2.0  # one miss of three: still reached
    assert algoperf.median_time([1.0, INF, INF]) == INF  # the median is a miss
    assert algoperf.median_time([1.0, 2.0, 3.0, 4.0]) == 2.5  # even: the mean of the middle two
    assert algoperf.median_time([1.0, 2.0, INF, INF]) == INF  # ... which touches a miss
    assert algoperf.median_time([]) == INF


def test_the_four_x_rule_sets_only_times_strictly_over_four_times_the_fastest_to_infinity():
    capped = algoperf.four_x_rule({"w": {"a": 10.0, "b": 40.0, "c": 40.0001, "d": INF}})
    assert capped["w"] == {"a": 10.0, "b": 40.0, "c": INF, "d": INF}
    assert algoperf.four_x_rule({"w": {"a": INF, "b": INF}})["w"] == {"a": INF, "b": INF}


def test_profile_and_trapezoid_score_by_hand():
    taus = algoperf.taus()
    assert len(taus) == 100 and taus[0] == 1.0 and taus[-1] == 4.0
    # one workload: a is fastest (ratio 1), b takes twice as long (ratio 2)
    out = algoperf.scores({"w": {"a": 10.0, "b": 20.0}}, ["a", "b"])
    assert out["ratios"]["w"] == {"a": 1.0, "b": 2.0}
    assert out["scores"]["a"] == pytest.approx(1.0)
    # tau_k = 1 + 3k/99 >= 2 from k = 33: rho_b is 0 up to k = 32, 1 from 33. The trapezoid rule
    # counts 66 full intervals and one half one: 66.5 x (3/99), divided by 3 (not 2/3 exactly).
    assert out["profile"]["b"][32] == 0.0 and out["profile"]["b"][33] == 1.0
    assert out["scores"]["b"] == pytest.approx(66.5 / 99)
    # two workloads, one unsolved by b: rho is divided by W = 2; the score halves
    two = algoperf.scores({"w1": {"a": 10.0, "b": 20.0}, "w2": {"a": 5.0, "b": INF}}, ["a", "b"])
    assert two["scores"]["b"] == pytest.approx(66.5 / 99 / 2)
    assert two["scores"]["a"] == pytest.approx(1.0)
    # a time beyond 4x counts as a miss before the ratios are taken
    far = algoperf.scores({"w": {"a": 10.0, "b": 41.0}}, ["a", "b"])
    assert far["ratios"]["w"]["b"] == INF and far["scores"]["b"] == 0.0
    # nobody solved it: everyone scores 0 there
    none = algoperf.scores({"w": {"a": INF, "b": INF}}, ["a", "b"])
    assert none["scores"] == {"a": 0.0, "b": 0.0}


def test_the_same_numbers_through_numpy_trapezoid_as_algoperf_computes_them():
    np = pytest.importorskip("numpy")
    times = {"w1": {"a": 10.0, "b": 25.0, "c": 12.0}, "w2": {"a": 30.0, "b": 15.0, "c": INF},
             "w3": {"a": 8.0, "b": 33.0, "c": 9.0}}
    out = algoperf.scores(times, ["a", "b", "c"])
    x = np.linspace(1, 4, 100)
    trap = getattr(np, "trapezoid", None) or np.trapz
    for o in "abc":
        assert out["scores"][o] == pytest.approx(trap(np.asarray(out["profile"][o]), x) / 3)
    assert out["times"]["w3"]["b"] == INF  # 33 > 4 x 8


def test_trials_split_into_studies_at_random_and_reproducibly():
    split = algoperf.study_split(15, 3, 0, "adamw")
    assert sorted(split.count(j) for j in range(3)) == [5, 5, 5]
    assert split == algoperf.study_split(15, 3, 0, "adamw")
    assert split != algoperf.study_split(15, 3, 1, "adamw") or split != algoperf.study_split(15, 3, 0, "sgd")
    trials = [{"index": i} for i in range(6)]
    groups = algoperf.by_study(trials, 3, 2, 0, "sgd")
    assert [len(g) for g in groups] == [2, 2, 2]
    assert sorted(t["index"] for g in groups for t in g) == list(range(6))


def test_sobol_draws_are_seeded_in_bounds_and_the_same_prefix_for_any_n():
    from search_spaces import SearchSpace, default_space
    from service.control.samplers import Samplers
    from service.control.samplers.sobol import sobol_configs

    space = default_space("adamw")
    five, eight = sobol_configs(space, 5, 0), sobol_configs(space, 8, 0)
    assert five == eight[:5] and len({c["lr"] for c in eight}) == 8
    assert sobol_configs(space, 5, 1) != five and sobol_configs(space, 5, 0, stage=2) != five
    for c in eight:
        for name, p in space.items():
            lo, hi = p.to_dict().get("low"), p.to_dict().get("high")
            if lo is not None:
                assert lo <= c[name] <= hi
    assert Samplers(store=None)["sobol"].stage_configs(space, 5, 0, 1) == five
    fixed = SearchSpace.from_dict({"lr": {"kind": "fixed", "value": 0.1}})
    assert sobol_configs(fixed, 3, 0) == [{"lr": 0.1}] * 3 and sobol_configs(space, 0, 0) == []
