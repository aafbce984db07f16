"""The derived image with plugins (docker/plugins/): a valid compose override that builds every
service FROM the project's image of the same name, and a Dockerfile hadolint accepts."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "docker" / "plugins"


def test_compose_override_derives_each_image_from_the_projects():
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: scripts/install.sh installs Debian's package"
    r = subprocess.run([compose, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
                        "-f", str(PLUGINS / "docker-compose.plugins.yml"), "--env-file", str(ROOT / ".env.example"),
                        "config"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    for name, base in (("ray-worker", "ray-worker"), ("ray-head", "ray-head"), ("api", "controller")):
        build = services[name]["build"]
        assert build["dockerfile"] == "docker/plugins/Dockerfile"
        assert build["args"]["BASE"] == f"rootfree/{base}:0.1.0"
        assert (ROOT / build["args"]["PLUGINS"] / "pyproject.toml").exists()
        assert services[name]["image"] == f"rootfree/{base}-plugins:0.1.0"
    assert services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]  # the rest is kept


def test_plugin_dockerfile_lints_and_installs_the_package():
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    r = subprocess.run([exe, "--format", "json", str(PLUGINS / "Dockerfile")], capture_output=True, text=True)
    assert json.loads(r.stdout or "[]") == []
    text = (PLUGINS / "Dockerfile").read_text()
    assert "FROM ${BASE}" in text and "RUN pip install --no-cache-dir /home/ray/plugins" in text
