"""Issue 30, item 4: a plugin whose import hangs is refused like a broken one after
ROOTFREE_PLUGIN_IMPORT_TIMEOUT_S, and `rootfree serve` starts anyway (it used to never listen)."""

import os
import signal
import subprocess
import sys
from importlib.metadata import EntryPoint

import httpx
import pytest

import optimizers
import optimizers.plugins
from optimizers.plugins import load_entry_points
from tests.service.conftest import bearer, make_token
from tests.support.local import free_port, wait_healthy
from workers.plugin_api import Workload

HUNG = "import time\ntime.sleep(3600)  # a network mount that never answers\n"


def test_a_hanging_import_is_refused_after_the_time_limit(tmp_path, monkeypatch):
    (tmp_path / "rf_test_hung_a.py").write_text(HUNG)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ROOTFREE_PLUGIN_IMPORT_TIMEOUT_S", "1")
    monkeypatch.setattr(optimizers.plugins, "entry_points",
                        lambda group: [EntryPoint("hung", "rf_test_hung_a:W", group)])
    loaded, errors = load_entry_points("rootfree.workloads", Workload, frozenset())
    assert loaded == {}
    assert errors == [{"name": "hung", "source": "rf_test_hung_a:W",
                       "error": "import did not finish within 1 s (ROOTFREE_PLUGIN_IMPORT_TIMEOUT_S): it hangs"}]


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
def test_serve_starts_with_a_hanging_plugin_installed(tmp_path):
    """A real installed distribution (a dist-info with entry points on the path) whose module
    hangs at import; `rootfree serve` listens and lists the plugin among the errors."""
    (tmp_path / "rf_test_hung_b.py").write_text(HUNG)
    info = tmp_path / "rf_test_hung-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rf-test-hung\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[rootfree.workloads]\nhung_workload = rf_test_hung_b:W\n")
    db = f"sqlite:///{tmp_path / 's.db'}"
    token = make_token(db, "alice", admin=True)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "ROOTFREE_PLUGIN_IMPORT_TIMEOUT_S": "2", "ROOTFREE_START_RUNNER": "false"}
    p = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--db", db, "--port", str(port)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, timeout_s=90, alive=lambda: p.poll() is None), p.stderr.read()
        body = httpx.get(f"{url}/workloads", params={"include": "errors"}, headers=bearer(token), timeout=30).json()
        errors = {e["name"]: e["error"] for e in body["errors"]}
        assert "did not finish within 2 s" in errors["hung_workload"]
        assert "noisy_quadratic" in {w["name"] for w in body["items"]}
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    assert p.returncode is not None
