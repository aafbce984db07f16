"""The original scheme's fair pairs: within a root / root-free pair every hyperparameter but lr
takes the same value on both sides, fixed in the stage space, so each trial lists it."""

import pytest

from search_spaces import default_space, original_scheme_space, sample
from search_spaces.defaults import PAIRS
from service.api.schemas import StudySpec


@pytest.mark.parametrize("pair", list(PAIRS))
def test_pair_trials_carry_equal_momentum_and_damping(pair):
    members = PAIRS[pair]
    trials = {name: sample(original_scheme_space(name), 4, seed=0) for name in members}
    for name, configs in trials.items():
        for hp in configs:
            assert {"lr", "momentum", "damping", "weight_decay", "beta2"} <= set(hp), name
    first = trials[members[0]][0]
    for name in members[1:]:
        for hp in trials[name]:
            shared = (set(hp) & set(first)) - {"lr"}
            assert {"momentum", "damping", "weight_decay", "beta2"} <= shared
            assert {k: hp[k] for k in shared} == {k: first[k] for k in shared}, name
    # and only lr is searched: the learning rates differ between trials
    assert len({hp["lr"] for hp in trials[members[0]]}) == 4


def test_the_pair_values_differ_from_the_classes_own_defaults_where_that_confounded():
    """RF-RMSProp's default momentum is 0.9 and RMSProp's 0: the fixed value must be one value."""
    rms, rf = original_scheme_space("rmsprop").to_dict(), original_scheme_space("rfrmsprop").to_dict()
    assert rms["momentum"] == rf["momentum"] == {"kind": "fixed", "value": 0.0}
    assert rms["damping"] == rf["damping"]
    assert rf["init"] == {"kind": "fixed", "value": 0.0} and rf["batch_size"]["value"] == 1
    assert original_scheme_space("shampoo").to_dict()["grafting"] == {"kind": "fixed", "value": "none"}


def test_a_study_under_the_original_scheme_resolves_to_the_fair_spaces():
    spec = StudySpec(name="fig2", workload="fmnist_cnn", optimizers=["shampoo", "ifshampoo", "adamw"],
                     protocol={"stages": [2], "scheme": "original"})
    spaces = spec.resolved().search_spaces
    for key in ("momentum", "damping", "beta2", "weight_decay", "update_every"):
        assert spaces["shampoo"][key] == spaces["ifshampoo"][key], key
    assert set(spaces["adamw"]) == {"lr"}  # not in a pair: its own defaults, as before


def test_the_modern_default_spaces_sample_momentum_log_uniformly_as_the_authors_sweeps():
    for name in ("sgd", "adamw", "rmsprop", "rfrmsprop", "rfshampoo", "ifshampoo", "shampoo"):
        assert default_space(name).to_dict()["momentum"]["kind"] == "log_uniform", name
    assert "beta2" in default_space("shampoo") and default_space("shampoo")["beta2"].kind != "fixed"
