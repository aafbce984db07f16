"""Issue 30's soak: a small study (noisy_quadratic with pace_ms) on a real `rootfree serve` under a
CPU burner (busy processes for its whole length, started and killed by their own pids) and a
20-second SIGSTOP of the API process completes with exact counts, no failed trial, and `rootfree
watch` following it throughout with no traceback. Prints its timings (the closing note's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.service.end_to_end.test_faults import assert_exact, nqm
from tests.support.local import free_port
from tests.support.serving import AUTH, api, kill, serve

pytestmark = pytest.mark.slow
BURNERS = 3  # busy processes beside the study, on a 2-core machine: load above 3
PAUSE_S = 20.0


def _rss_mb(root_pid: int) -> float:
    """Resident memory of a process and its descendants (the controller, its runner, Ray), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total / 2**20


def test_soak_cpu_burner_and_a_paused_api(tmp_path):
    t0 = time.monotonic()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BURNERS)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spec = nqm("soak", stages=(4, 2), epochs=3, pace_ms=300, cap=2, optimizers=("sgd",))
    proc, watcher, peak_mb = None, None, 0.0
    try:
        proc = serve(f"sqlite:///{tmp_path / 's.db'}", port, tmp_path)
        started = time.monotonic()
        sid = api.post(f"{url}/studies", json=spec, timeout=60).json()["id"]
        token = AUTH["Authorization"].split()[1]
        watcher = subprocess.Popen([sys.executable, "-m", "service.cli", "watch", sid, "--url", url, "--token", token,
                                    "--interval", "1", "--timeout", "90"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while api.get(f"{url}/studies/{sid}", timeout=60).json()["status"] != "running":  # the runner has it
            assert time.monotonic() - started < 120, "the study was not admitted"
            time.sleep(0.5)
        peak_mb = max(peak_mb, _rss_mb(proc.pid))
        os.kill(proc.pid, signal.SIGSTOP)  # the API process only: the runner is its own process
        paused = time.monotonic()
        time.sleep(PAUSE_S)
        peak_mb = max(peak_mb, _rss_mb(proc.pid))
        os.kill(proc.pid, signal.SIGCONT)
        out, err = watcher.communicate(timeout=300)
        ended = time.monotonic()
        assert watcher.returncode == 0, err[-3000:]  # completed
        assert "Traceback" not in err and "error" not in err.lower(), err[-3000:]
        assert "completed" in out
        rows = assert_exact(url, sid, spec)
        assert len(rows) == 6 and not [t for t in rows if t["status"] == "failed"]
        print(f"\nsoak: server start {started - t0:.1f} s, study {ended - started:.1f} s "
              f"(API paused {PAUSE_S:g} s from {paused - started:.1f} s), {BURNERS} burners, "
              f"load average {os.getloadavg()[0]:.1f}, controller+runner+Ray RSS {peak_mb:.0f} MiB")
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
        if proc is not None:
            os.kill(proc.pid, signal.SIGCONT)
            kill(proc)
        for b in burners:  # by their own pids
            b.kill()
            b.wait()
