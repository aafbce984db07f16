"""The example study files are valid specs (what `rootfree submit` would send)."""

from pathlib import Path

import pytest
import yaml

from service.api.schemas import StudySpec

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_a_valid_study(path):
    spec = StudySpec(**yaml.safe_load(path.read_text())).resolved()
    assert spec.protocol.seeds >= 2
    if spec.protocol.scheme == "original":
        for space in spec.search_spaces.values():
            assert [k for k, d in space.items() if d["kind"] != "fixed"] == ["lr"]


def test_there_are_the_three_examples():
    assert {p.stem for p in EXAMPLES} == {"figure1_cnn_modern", "figure2_cnn_original", "table1_vit"}
