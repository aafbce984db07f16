"""Issue 30: infrastructure failures are not results. A trial whose Ray worker is killed (SIGKILL
by its own pid, as Ray's memory monitor kills one) runs again from its last checkpoint, counted
in `attempts`, with the study log saying why; the study completes with no failed trial."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.service.end_to_end.test_faults import ENDED, assert_exact, nqm, trials
from tests.support.local import free_port
from tests.support.serving import api, kill, serve, wait_for

pytestmark = pytest.mark.slow


def test_a_killed_worker_is_retried_from_its_checkpoint_not_failed(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spec = nqm("infra", stages=(2,), epochs=4, pace_ms=700, cap=1, optimizers=("sgd",))
    proc = serve(f"sqlite:///{tmp_path / 's.db'}", port, tmp_path)
    try:
        sid = api.post(f"{url}/studies", json=spec, timeout=30).json()["id"]
        deadline, victim = time.time() + 300, None
        while victim is None:
            assert time.time() < deadline, "no trial reported twice"
            for t in trials(url, sid):
                if t["status"] == "running" and len(t["history"]) >= 2 and t["history"][-1].get("pid"):
                    victim = t
            time.sleep(0.3)
        os.kill(victim["history"][-1]["pid"], signal.SIGKILL)  # the worker dies mid-trial
        study = wait_for(url, sid, lambda s: s["status"] in ENDED, timeout=400)
        assert study["status"] == "completed", study["error"]
        rows = assert_exact(url, sid, spec)  # no failed trial, every epoch once
        t = next(r for r in rows if r["id"] == victim["id"])
        assert t["status"] == "completed" and t["attempts"] == 2, t
        assert any(h.get("resumed_from_epoch") for h in t["history"])  # from its checkpoint
        assert all(r["attempts"] == 1 for r in rows if r["id"] != victim["id"])
        log = api.get(f"{url}/studies/{sid}/logs", params={"tail": 1000}, timeout=30).text
        assert "lost its worker" in log and "retrying from its last checkpoint" in log
    finally:
        kill(proc)
