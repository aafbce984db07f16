"""`rootfree serve` fails fast, in one line naming the setting, on a wrong database URL or Ray
address, before binding its port; and stores nothing."""

import subprocess
import sys
from pathlib import Path

import pytest

from service.cli.preflight import PLACEHOLDER, ConfigError, check_ray, check_secrets, ray_endpoint
from service.settings import Settings
from tests.support import free_port


def _serve(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "service.cli", "serve", "--port", str(free_port()), *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
@pytest.mark.parametrize("url, says", [
    ("not-a-url", "is not usable"),
    (f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", "cannot reach the study database"),
    ("mysql+nosuchdriver://x@127.0.0.1/db", "is not usable"),
], ids=["not-a-url", "unreachable-postgres", "unknown-driver"])  # fixed ids: the port differs per xdist worker
def test_bad_database_fails_fast(url, says):
    r = _serve("--db", url)
    assert r.returncode == 2
    assert says in r.stderr and "ROOTFREE_DATABASE_URL" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
def test_unreachable_ray_address_fails_fast(tmp_path):
    port = free_port()
    r = _serve("--db", f"sqlite:///{tmp_path / 's.db'}", "--ray-address", f"127.0.0.1:{port}")
    assert r.returncode == 2
    assert f"127.0.0.1:{port}" in r.stderr and "ROOTFREE_RAY_ADDRESS" in r.stderr
    assert "Traceback" not in r.stderr


def test_ray_address_forms():
    assert ray_endpoint("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert ray_endpoint("ray://head:10001") == ("head", 10001)
    assert ray_endpoint("auto") is None
    for bad in ("head", "head:port", ":6379"):
        with pytest.raises(ConfigError, match="not HOST:PORT"):
            ray_endpoint(bad)
    check_ray(None)  # a local Ray: nothing to reach


PLACEHOLDERS = [line.split("=", 1)[0] for line in (Path(__file__).parents[3] / ".env.example").read_text().splitlines()
                if line.strip().endswith("=" + PLACEHOLDER) and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("name", PLACEHOLDERS)
def test_every_placeholder_of_env_example_is_refused(tmp_path, name):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", start_runner=False)
    with pytest.raises(ConfigError, match=name) as e:
        check_secrets(settings, environ={name: PLACEHOLDER})
    assert PLACEHOLDER not in str(e.value)  # never the secret itself
    check_secrets(settings, environ={name: "a-real-secret"})


def test_the_env_example_placeholders_include_grafana():
    assert {"POSTGRES_PASSWORD", "RAY_AUTH_TOKEN", "GRAFANA_ADMIN_PASSWORD"} <= set(PLACEHOLDERS)
