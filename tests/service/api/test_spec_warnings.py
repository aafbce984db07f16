"""Warnings before a study runs (service/results/feasibility.py): `POST /studies` and `POST /suites`
answer 201 with `warnings` naming the field when the spec cannot produce a resolved verdict, and
`rootfree submit` prints them (issue 32)."""

from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from service.api.schemas import StudySpec, SuiteSpec
from service.app import create_app
from service.domain.spec import spec_json
from service.results.feasibility import power_at, spec_warnings
from service.settings import Settings
from tests.service.cli.test_commands import rootfree  # noqa: F401 - the fixture
from tests.service.conftest import bearer, make_token

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def resolved(**fields):
    base = {"name": "w", "workload": "noisy_quadratic", "optimizers": ["sgd", "adamw"],
            "protocol": {"stages": [2]}}
    return spec_json(StudySpec.model_validate({**base, **fields}).resolved())


@pytest.mark.parametrize("name, seeds", [("figure1_cnn_modern", 3), ("figure2_cnn_original", 3), ("table1_vit", 2)])
def test_the_three_example_studies_are_warned_and_say_why_in_their_comment(name, seeds):
    text = (EXAMPLES / f"{name}.yaml").read_text()
    spec = spec_json(StudySpec.model_validate(yaml.safe_load(text)).resolved())
    (w,) = spec_warnings(spec)
    assert w.startswith(f"protocol.seeds is {seeds}:") and "the minimum is 4" in w
    assert "cannot resolve" in text  # the file's comment says why


def test_every_example_suite_can_resolve():
    for path in sorted((EXAMPLES / "suites").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            suite, _ = SuiteSpec.model_validate(doc).resolved()
            assert spec_warnings(suite) == [], path


def test_the_rules_and_their_minimum():
    assert "protocol.seeds is 0" in spec_warnings(resolved())[0]
    assert spec_warnings(resolved(optimizers=["sgd"])) == []  # nothing to compare
    assert spec_warnings(resolved(protocol={"stages": [2], "seeds": 4})) == []
    w = spec_warnings(resolved(protocol={"stages": [2], "seeds": 5, "paired": True}))
    assert len(w) == 1 and "paired seed runs" in w[0] and "the minimum is 6" in w[0]
    assert spec_warnings(resolved(protocol={"stages": [2], "seeds": 6, "paired": True})) == []
    (w,) = spec_warnings(resolved(protocol={"stages": [2], "seeds": 4, "repeats": 2}))
    assert w.startswith("protocol.repeats is 2:") and "the minimum is 4" in w
    assert spec_warnings(resolved(protocol={"stages": [2], "seeds": 4, "repeats": 4})) == []
    # the power quoted grows with the seeds and shrinks with the pairs Holm divides alpha among
    assert power_at(3, 2, False, 1) > power_at(3, 2, False, 3) and power_at(6, 2, True, 3) > power_at(3, 2, True, 3)


def test_post_studies_and_suites_answer_the_warnings(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=url, start_runner=False))
    with TestClient(app, headers=bearer(make_token(url, "alice", admin=False))) as c:
        body = {"name": "w", "workload": "noisy_quadratic", "optimizers": ["sgd", "adamw"],
                "protocol": {"stages": [2], "seeds": 3}, "budget": {"epochs": 2}}
        r = c.post("/studies", json=body)
        assert r.status_code == 201 and r.json()["warnings"][0].startswith("protocol.seeds is 3")
        ok = c.post("/studies", json={**body, "protocol": {"stages": [2], "seeds": 4}})
        assert ok.status_code == 201 and ok.json()["warnings"] == []
        for protocol, field in (({"repeats": 11}, "protocol.repeats"), ({"repeats": 2, "method": "tpe"},
                                                                          "protocol.repeats")):
            bad = c.post("/studies", json={**body, "protocol": {"stages": [2], **protocol}})
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == field, bad.text
        suite = {"name": "s", "workloads": [{"name": "noisy_quadratic", "budget": {"epochs": 2}}],
                 "optimizers": ["sgd", "adamw"], "baseline": "sgd", "protocol": {"stages": [2], "seeds": 2}}
        r = c.post("/suites", json=suite)
        assert r.status_code == 201 and r.json()["warnings"][0].startswith("protocol.seeds is 2")


def test_rootfree_submit_prints_the_warnings_on_stderr(rootfree, tmp_path, capsys):  # noqa: F811
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "w", "workload": "noisy_quadratic", "optimizers": ["sgd", "adamw"],
                                    "protocol": {"stages": [2]}, "budget": {"epochs": 2}}))
    assert rootfree("submit", str(path), "--token", rootfree.alice) == 0
    out = capsys.readouterr()
    assert len(out.out.split()) == 1  # stdout: the id alone
    assert out.err.startswith("warning: protocol.seeds is 0")
