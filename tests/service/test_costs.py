"""Costs that grow faster than the work (issue 19): the expected-best curve on a grid of k, the
cached and single-flight analysis and report, aggregates in SQL, bulk delete, one query per
studies page, keyset pagination, the log tail and `rootfree logs -f` by byte offset."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np

from service import analysis


def test_expected_max_closed_form_matches_brute_force_and_monte_carlo():
    values = np.array([0.3, -1.0, 2.5, 0.7])
    curve = analysis.expected_max_curve(values, [1, 2, 3, 4])
    for j, k in enumerate([1, 2, 3, 4]):  # every k-tuple drawn with replacement, equally likely
        direct = statistics.fmean(max(t) for t in itertools.product(values, repeat=k))
        assert math.isclose(curve[j], direct, rel_tol=1e-12)
    rng = np.random.default_rng(1)
    values = rng.normal(size=300)
    ks = analysis.k_grid(300, points=12)
    curve = analysis.expected_max_curve(values, ks)
    for j, k in enumerate(ks):
        draws = values[rng.integers(0, 300, (20_000, k))].max(axis=1)
        assert abs(curve[j] - draws.mean()) < 5 * draws.std() / math.sqrt(len(draws)) + 1e-12
    # min mode mirrors max: the expected best of k draws of the smallest
    out = analysis.expected_best(list(values[:4]), "min", n_boot=10)
    direct = statistics.fmean(min(t) for t in itertools.product(values[:4], repeat=2))
    assert math.isclose(out[1]["mean"], direct, rel_tol=1e-12)


def test_expected_best_is_evaluated_on_a_log_grid_that_includes_one_and_n():
    for n in (1, 7, 40, 41, 1000, 5000):
        ks = analysis.k_grid(n)
        assert ks[0] == 1 and ks[-1] == n and len(ks) <= analysis.K_POINTS
        assert np.all(np.diff(ks) > 0)
    values = list(np.random.default_rng(0).uniform(size=1000))
    curve = analysis.expected_best(values, "max")
    assert [p["trials"] for p in curve] == list(analysis.k_grid(1000))
    assert 10 <= len(curve) <= analysis.K_POINTS and curve[-1]["trials"] == 1000
    assert all(p["lo"] <= p["mean"] + 1e-9 <= p["hi"] + 2e-9 for p in curve)
    assert math.isclose(analysis.band_error(100, 0.9), math.sqrt(0.05 * 0.95 / 100))
    body = analysis.analyse({"mode": "max", "metric": "m", "protocol": {"stages": [3]}, "optimizers": ["a"]},
                            {}, [{"optimizer": "a", "stage": 1, "index": i, "status": "completed", "objective": v,
                                  "config": {}, "history": []} for i, v in enumerate(values[:3])])
    assert "Monte-Carlo error" in body["band"]
