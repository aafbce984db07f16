"""`as_spec` reads a hand-written spec given in part (tests, bench/); such a spec never reaches
the store's JSON column, whose dump would silently leave its unset fields out."""

import pytest

from service.api.schemas import StudySpec
from service.domain.spec import as_spec, load_spec, spec_json

PART = {"metric": "loss", "mode": "min", "optimizers": ["a", "b"], "protocol": {"stages": [3], "seeds": 4}}


def test_a_spec_given_in_part_reads_what_it_gives_and_nothing_else():
    spec = as_spec(PART)
    assert spec.metric == "loss" and spec.protocol.seeds == 4 and spec.protocol.search_stages == 1
    with pytest.raises(AttributeError):
        spec.budget  # noqa: B018 - left out: reading it fails, as the dict's KeyError did


def test_a_spec_given_in_part_is_not_stored():
    with pytest.raises(ValueError, match="without name, workload, budget"):
        spec_json(as_spec(PART))


def test_a_whole_spec_is_stored_as_before():
    spec = StudySpec(name="s", workload="noisy_quadratic", optimizers=["sgd"]).resolved()
    assert load_spec(spec_json(spec)) == spec and as_spec(spec_json(spec)) == spec
