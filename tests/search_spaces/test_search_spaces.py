import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces import (
    ACCEPTED,
    NarrowingError,
    SearchSpace,
    SearchSpaceError,
    TwoStageProtocol,
    default_space,
    narrow,
    optimizer_names,
    sample,
    sample_one,
)

ISSUE_EXAMPLE = {
    "lr": {"kind": "log_uniform", "low": 1e-5, "high": 1e-1},
    "momentum": {"kind": "uniform", "low": 0.0, "high": 0.99},
    "beta2": {"kind": "one_minus_log_uniform", "low": 0.9, "high": 0.9999},
    "update_every": {"kind": "fixed", "value": 2},
    "structure": {"kind": "choice", "values": ["dense", "diagonal"]},
}


def test_issue_example_round_trips_through_dict_json_yaml_optuna():
    s = SearchSpace.from_dict(ISSUE_EXAMPLE)
    assert s.to_dict() == {k: ISSUE_EXAMPLE[k] for k in sorted(ISSUE_EXAMPLE)}
    assert SearchSpace.from_json(s.to_json()) == s
    assert SearchSpace.from_yaml(s.to_yaml()) == s
    assert SearchSpace.from_optuna(s.to_optuna(), s.optuna_kinds()) == s


def test_sample_is_deterministic_across_processes():
    code = ("import json; from search_spaces import *; "
            "print(json.dumps(sample(default_space('ifshampoo'), 5, seed=7, stage=2)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == sample(default_space("ifshampoo"), 5, seed=7, stage=2)


@pytest.mark.parametrize("method", ["random", "halton"])
def test_trial_i_alone_equals_position_i_and_inside_bounds(method):
    space = SearchSpace.from_dict(ISSUE_EXAMPLE)
    configs = sample(space, 100, seed=3, method=method)
    assert sample_one(space, 57, seed=3, method=method) == configs[57]
    assert sample(space, 100, seed=3, stage=2, method=method) != configs
    for c in configs:
        assert 1e-5 <= c["lr"] <= 1e-1 and 0 <= c["momentum"] <= 0.99
        assert 0.9 <= c["beta2"] <= 0.9999 and c["update_every"] == 2
        assert c["structure"] in ("dense", "diagonal")
    assert {c["structure"] for c in configs} == {"dense", "diagonal"}


def test_log_uniform_is_uniform_in_log_space():
    space = SearchSpace.from_dict({"lr": {"kind": "log_uniform", "low": 1e-6, "high": 1.0}})
    xs = sorted((math.log10(c["lr"]) + 6) / 6 for c in sample(space, 4000, seed=0))
    # Kolmogorov-Smirnov against U(0, 1): critical value at alpha = 0.01 is 1.63 / sqrt(n)
    d = max(max((i + 1) / len(xs) - x, x - i / len(xs)) for i, x in enumerate(xs))
    assert d < 1.63 / math.sqrt(len(xs))
    # a linear sampler would put ~all mass in the top decade; log-uniform puts 1/6 there
    assert 0.13 < sum(x > 5 / 6 for x in xs) / len(xs) < 0.2


def test_one_minus_log_uniform_spreads_one_minus_beta():
    space = SearchSpace.from_dict(
        {"b": {"kind": "one_minus_log_uniform", "low": 0.9, "high": 0.9999}})
    xs = [math.log10(1 - c["b"]) for c in sample(space, 2000, seed=1)]
    assert abs(sum(-4 < x < -3 for x in xs) / 2000 - 1 / 3) < 0.05


def test_int_parameters():
    space = SearchSpace.from_dict({"T": {"kind": "log_uniform", "low": 1, "high": 100, "int": True}})
    vals = [c["T"] for c in sample(space, 200, seed=0)]
    assert all(isinstance(v, int) and 1 <= v <= 100 for v in vals)


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ({"lr": {"kind": "log_uniform", "low": 1e-1, "high": 1e-5}}, "'lr': low"),
        ({"lr": {"kind": "uniform", "low": 1.0, "high": 1.0}}, "'lr': low"),
        ({"lr": {"kind": "log_uniform", "low": 0.0, "high": 1.0}}, "'lr': low (0.0) must be > 0"),
        ({"lr": {"kind": "gaussian", "low": 0.0, "high": 1.0}}, "'lr': unknown kind 'gaussian'"),
        ({"opt": {"kind": "choice", "values": []}}, "'opt': choice needs at least one value"),
        ({"lr": {"kind": "uniform", "low": float("nan"), "high": 1.0}}, "'lr': low must be finite"),
        ({"lr": {"kind": "uniform", "low": 0.0, "high": float("inf")}}, "'lr': high must be finite"),
        ({"b": {"kind": "one_minus_log_uniform", "low": 0.9, "high": 1.0}}, "'b': one_minus"),
        ({"c": {"kind": "choice", "values": list(range(5000))}}, "'c': 5000 choices"),
        ({"lr": {"kind": "uniform", "low": 0.0}}, "'lr': missing field 'high'"),
        ({"lr": 0.1}, "'lr': expected an object"),
        ({f"p{i}": {"kind": "fixed", "value": 1} for i in range(101)}, "at most 100"),
    ],
)
def test_invalid_spaces_name_parameter_and_problem(spec, fragment):
    with pytest.raises(SearchSpaceError) as e:
        SearchSpace.from_dict(spec)
    assert fragment in str(e.value)


def test_name_the_optimizer_does_not_accept():
    space = SearchSpace.from_dict({"riemannian_momentum": {"kind": "fixed", "value": 0.5}})
    with pytest.raises(ValueError, match="'riemannian_momentum': not a hyperparameter of optimizer 'sgd'"):
        space.validate_for(ACCEPTED["sgd"], "sgd")


@pytest.mark.parametrize("name", optimizer_names())
def test_default_spaces_are_valid_and_accepted_by_the_optimizer(name):
    import optimizers

    assert set(ACCEPTED[name]) == set(optimizers.hyperparameters(name))
    space = default_space(name)
    space.validate_for(ACCEPTED[name], name)
    assert SearchSpace.from_json(space.to_json()) == space
    assert SearchSpace.from_optuna(space.to_optuna(), space.optuna_kinds()) == space
    import torch

    for config in sample(space, 3, seed=0):
        optimizers.build(name, torch.nn.Linear(3, 2).parameters(), **config)


def test_defaults_are_wider_than_the_authors_sweeps():
    sweeps = {"ifshampoo": {"lr": (8e-5, 8e-4), "weight_decay": (1e-6, 6e-2),
                            "damping": (3e-5, 1e-3), "beta2": (0.05, 0.8),
                            "momentum": (0.1, 0.95), "riemannian_momentum": (0.1, 0.9)},
              "rfrmsprop": {"lr": (5e-5, 1e-2), "weight_decay": (5e-5, 5e-2),
                            "damping": (1e-5, 1e-3), "beta2": (8e-4, 0.1),
                            "momentum": (0.1, 0.99)},
              "adamw": {"damping": (1e-12, 1e-7)}}
    for opt, ranges in sweeps.items():
        space = default_space(opt)
        for k, (lo, hi) in ranges.items():
            assert space[k].low < lo and space[k].high > hi, (opt, k)


def _synthetic_results(space, n=100, seed=0):
    def objective(c):  # optimum lr = 1e-3, damping matters less, momentum irrelevant
        return (math.log10(c["lr"]) + 3) ** 2 + 0.1 * (math.log10(c["damping"]) + 4) ** 2
    return [(c, objective(c)) for c in sample(space, n, seed)]


def test_narrowing_contains_the_optimum_and_is_3x_narrower():
    space = SearchSpace.from_dict({
        "lr": {"kind": "log_uniform", "low": 1e-6, "high": 1.0},
        "damping": {"kind": "log_uniform", "low": 1e-8, "high": 1e-1},
        "momentum": {"kind": "uniform", "low": 0.0, "high": 0.99},
        "update_every": {"kind": "fixed", "value": 2},
        "structure": {"kind": "choice", "values": ["a", "b", "c"]},
    })
    results = _synthetic_results(space)
    results += [({**results[0][0], "lr": 0.5}, None), ({**results[1][0]}, float("nan"))]
    s2 = narrow(space, results, mode="min", top_k=10)
    assert s2["lr"].low <= 1e-3 <= s2["lr"].high
    assert s2["damping"].low <= 1e-4 <= s2["damping"].high
    assert math.log(space["lr"].high / space["lr"].low) >= 3 * math.log(s2["lr"].high / s2["lr"].low)
    assert s2["lr"].low >= space["lr"].low and s2["lr"].high <= space["lr"].high
    assert s2["update_every"] == space["update_every"]
    assert set(s2["structure"].values if hasattr(s2["structure"], "values") else
               [s2["structure"].value]) <= {"a", "b", "c"}
    # a stage-2 sample stays inside the narrowed space
    for c in sample(s2, 20, seed=0, stage=2):
        assert s2["lr"].low <= c["lr"] <= s2["lr"].high


def test_narrowing_widens_at_a_bound_and_says_so():
    space = SearchSpace.from_dict({"lr": {"kind": "log_uniform", "low": 1e-4, "high": 1e-1},
                                   "momentum": {"kind": "uniform", "low": 0.0, "high": 0.99}})
    results = [(c, math.log(c["lr"])) for c in sample(space, 100, seed=0)]  # best: smallest lr
    s2 = narrow(space, results, mode="min", top_k=5)
    assert s2["lr"].low < 1e-4
    assert any("lr" in n and "low bound" in n and "widened" in n for n in s2.notes)
    results = [(c, c["momentum"]) for c in sample(space, 100, seed=0)]  # best: largest momentum
    s2 = narrow(space, results, mode="max", top_k=5)
    assert s2["momentum"].high <= 0.99
    assert any("momentum" in n and "hard limit" in n for n in s2.notes)


def test_narrowing_needs_successful_trials():
    space = default_space("sgd")
    configs = sample(space, 5, seed=0)
    with pytest.raises(NarrowingError, match="at least 2 successful trials, got 1 of 5"):
        narrow(space, [(configs[0], 0.3)] + [(c, None) for c in configs[1:]])


def test_protocol_serialises_and_validates():
    p = TwoStageProtocol(stages=(100, 100), top_k=10, seed=3, metric="test_error", mode="min")
    assert TwoStageProtocol.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    for bad, field in [({"stages": [0, 100]}, "stages"), ({"stages": [10001]}, "stages"),
                       ({"top_k": 1}, "top_k"), ({"mode": "best"}, "mode"),
                       ({"seed": -1}, "seed"), ({"nonsense": 1}, "nonsense")]:
        with pytest.raises(ValueError, match=field):
            TwoStageProtocol.from_dict(bad)


finite = st.floats(min_value=1e-12, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(lo=finite, factor=st.floats(min_value=1.001, max_value=1e6), is_log=st.booleans(),
       values=st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=5), st.booleans()),
                       min_size=1, max_size=5, unique=True))
def test_round_trips_hypothesis(lo, factor, is_log, values):
    spec = {"x": {"kind": "log_uniform" if is_log else "uniform", "low": lo, "high": lo * factor},
            "c": {"kind": "choice", "values": values}}
    s = SearchSpace.from_dict(spec)
    assert SearchSpace.from_json(s.to_json()) == s
    assert SearchSpace.from_yaml(s.to_yaml()) == s
    assert SearchSpace.from_optuna(s.to_optuna(), s.optuna_kinds()) == s
    c = sample_one(s, 0, seed=0)
    assert lo <= c["x"] <= lo * factor
