"""`rootfree agent` against a real HTTP server (uvicorn, runner off: stages are opened by the
runner's own StageMachine, as in test_external_api), running real commands."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import uvicorn

from service.app import create_app
from service.client import Client
from service.settings import Settings
from tests.service.api.test_external_trials import SPEC, open_stages
from tests.service.conftest import make_token
from tests.support import free_port, wait_healthy

pytestmark = pytest.mark.slow  # real commands under a real server, seconds each: not in `make test-fast`

SCRIPT = textwrap.dedent("""
    import os, sys, time
    from service.client import current_trial
    trial = current_trial()
    mode = os.environ.get("MODE", "ok")
    if mode == "fail":
        print("loading data", file=sys.stderr)
        raise SystemExit("RuntimeError: CUDA out of memory on this box")
    if mode == "tqdm":  # a progress bar's carriage returns and ANSI colours, then a failure
        print("\\r 10%|#    |\\r 50%|##   |\\x1b[31m boom \\x1b[0m\\u202e", file=sys.stderr)
        raise SystemExit(3)
    if mode == "sleep":
        trial.report(1, loss=1.0)
        time.sleep(60)
    if mode == "self":  # the script ends the trial itself
        with trial:
            trial.report(1, loss=0.125)
            trial.complete("stopped")
        sys.exit(0)
    trial.report(1, loss=trial.hyperparameters["lr"])
""")


@pytest.fixture
def server(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'studies.db'}"
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(Settings(database_url=db_url, start_runner=False)),
                                        host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    assert wait_healthy(url, alive=thread.is_alive)
    token = make_token(db_url, "alice", admin=False)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    yield {"url": url, "db": db_url, "token": token, "script": str(script), "client": Client(url, token)}
    srv.should_exit = True
    thread.join(timeout=10)


def _as_at_a_terminal() -> None:
    # A shell's background job (CI started without job control) ignores SIGINT, and the agent would
    # inherit that: Ctrl-C at a terminal is what the tests mean, so the agent starts as it would there.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def agent(server, sid, *extra, mode="ok", **kw):
    env = {**os.environ, "MODE": mode, "PYTHONPATH": os.getcwd()}
    return subprocess.Popen([sys.executable, "-m", "service.cli", "agent", sid, "--url", server["url"],
                             "--token", server["token"], "--poll", "0.2", *extra, "--",
                             sys.executable, server["script"]],
                            env=env, stderr=subprocess.PIPE, text=True, preexec_fn=_as_at_a_terminal, **kw)


def stderr_until(p, word: str, timeout: float) -> str:
    """What the process wrote to stderr up to the first line with `word` (fails after `timeout`)."""
    import selectors

    sel, seen, deadline = selectors.DefaultSelector(), "", time.time() + timeout
    sel.register(p.stderr, selectors.EVENT_READ)
    while word not in seen:
        assert time.time() < deadline and p.poll() is None, seen
        if sel.select(timeout=0.5):  # raw reads: nothing is left in the text wrapper's buffer
            seen += os.read(p.stderr.fileno(), 65536).decode(errors="replace")
    sel.close()
    return seen


def statuses(server, sid):
    return sorted(t["status"] for t in server["client"].get(f"/studies/{sid}/trials"))


def test_agent_runs_count_trials_then_waits_and_ends(server):
    c = server["client"]
    study = c.submit({**SPEC, "protocol": {**SPEC["protocol"], "stages": [3, 1]}})
    p = agent(server, study.id, "--count", "2")
    # queued: the agent waits (204) and says so; the stages open only once it has (on a busy
    # machine the agent may take longer than any fixed sleep to start)
    early = stderr_until(p, "waiting", timeout=60)
    assert p.poll() is None
    open_stages(server["db"], study.id)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, early + err
    assert statuses(server, study.id) == ["completed", "completed", "pending"]
    # the next agent takes the last stage-1 trial, then waits for stage 2, which the runner opens
    p = agent(server, study.id)
    deadline = time.time() + 60
    while statuses(server, study.id) != ["completed"] * 3:
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.2)
    open_stages(server["db"], study.id)
    while statuses(server, study.id) != ["completed"] * 4:
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.2)
    c.post(f"/studies/{study.id}/cancel")  # ends the study: the agent has nothing left
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "has ended" in err


def test_agent_fails_a_failing_command_and_keeps_what_the_script_ended(server):
    c = server["client"]
    study = c.submit(SPEC)
    open_stages(server["db"], study.id)
    p = agent(server, study.id, "--count", "1", mode="fail")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    failed = c.get(f"/studies/{study.id}/trials", params={"status": "failed"})
    assert len(failed) == 1 and "exit code 1" in failed[0]["error"]
    assert "CUDA out of memory on this box" in failed[0]["error"]
    p = agent(server, study.id, "--count", "1", mode="self")
    p.communicate(timeout=60)
    stopped = c.get(f"/studies/{study.id}/trials", params={"status": "stopped"})
    assert len(stopped) == 1 and stopped[0]["objective"] == 0.125


def test_agent_ctrl_c_fails_the_running_trial(server):
    c = server["client"]
    study = c.submit(SPEC)
    open_stages(server["db"], study.id)
    p = agent(server, study.id, mode="sleep", start_new_session=True)
    deadline = time.time() + 60
    while "running" not in statuses(server, study.id) or not c.get(f"/studies/{study.id}/trials",
                                                                  params={"status": "running"})[0]["metrics"]:
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGINT)  # the terminal's Ctrl-C: the agent and its command
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    failed = c.get(f"/studies/{study.id}/trials", params={"status": "failed"})
    assert len(failed) == 1 and "interrupted" in failed[0]["error"]
    assert "running" not in statuses(server, study.id)


def test_submit_goes_through_the_client(server, tmp_path):
    import json as _json

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.json"
    good.write_text("name: s\nworkload: noisy_quadratic\noptimizers: [sgd]\nexecution: external\n")
    bad.write_text(_json.dumps({"name": "s", "workload": "imagenet", "optimizers": ["sgd"]}))
    run = [sys.executable, "-m", "service.cli", "submit", "--url", server["url"], "--token", server["token"]]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    r = subprocess.run([*run, str(good)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert server["client"].study(r.stdout.strip()).data["spec"]["execution"] == "external"
    r = subprocess.run([*run, str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("error 422: workload")


def test_agent_goes_on_after_a_trial_fails_with_control_characters_in_its_stderr(server):
    """Issue 30, item 1: the fail's reason is sanitised by the service (not refused with 422),
    and the agent goes on to its next trial instead of exiting."""
    c = server["client"]
    study = c.submit(SPEC)
    open_stages(server["db"], study.id)
    p = agent(server, study.id, "--count", "2", mode="tqdm")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    failed = c.get(f"/studies/{study.id}/trials", params={"status": "failed"})
    assert len(failed) == 2 and "running" not in statuses(server, study.id)
    for t in failed:
        assert "exit code 3" in t["error"] and " 50%|##" in t["error"] and "boom" in t["error"]
        assert not any(ch in t["error"] for ch in "\r\x1b\u202e")


def test_agent_timeout_kills_a_hung_command_and_goes_on(server):
    c = server["client"]
    study = c.submit(SPEC)
    open_stages(server["db"], study.id)
    p = agent(server, study.id, "--count", "2", "--timeout", "3", mode="sleep")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    failed = c.get(f"/studies/{study.id}/trials", params={"status": "failed"})
    assert len(failed) == 2 and all("did not finish within 3 s" in t["error"] for t in failed)


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for a reaper."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_the_timeout_kills_the_commands_children_too(tmp_path):
    """`--timeout` ends the whole command: a shell or launcher's child (the training process
    itself) is killed with it, not left training a trial that was already failed."""
    from service.cli.agent import _run

    class _Beat:
        def stop(self):
            pass

    class _Trial:
        claim: dict = {}

        def keep_alive(self):
            return _Beat()

    pidfile = tmp_path / "child.pid"
    launcher = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(120)
    """)
    rc, _ = _run(_Trial(), [sys.executable, "-c", launcher], Client("http://127.0.0.1:9", "t"), "s", timeout_s=3)
    assert rc is None
    child = int(pidfile.read_text())
    deadline = time.time() + 10
    while not _gone(child) and time.time() < deadline:
        time.sleep(0.1)
    try:
        assert _gone(child), "the command's child still runs"
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
