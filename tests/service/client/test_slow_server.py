"""Issue 30: clients that survive a slow server. The Python client retries reads and idempotent
calls with backoff up to its limit, then raises ServiceUnavailable; every CLI command ends with
one line and exit code 2, never a traceback; `watch` follows a study through a pause (SIGSTOP)
and a restart of the server (its process killed by its own pid)."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from service.cli import commands as cli
from service.client import Client, ServiceUnavailable
from tests.service.api.test_external_trials import SPEC
from tests.service.conftest import make_token
from tests.support.local import free_port, wait_healthy


def _flaky(failures: list[Exception], calls: list[str]):
    """A transport that raises the given errors in turn, then answers 200 {}."""

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if failures:
            e = failures.pop(0)
            e.request = request
            raise e
        return httpx.Response(200, json={"ok": True})

    return httpx.MockTransport(handler)


def _client(failures, calls, timeout=30.0):
    http = httpx.Client(base_url="http://svc", transport=_flaky(failures, calls))
    return Client("http://svc", "t", timeout=timeout, http=http)


def test_reads_and_idempotent_calls_are_retried():
    calls: list[str] = []
    errors = [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut")]
    assert _client(errors, calls).get("/studies/x") == {"ok": True}
    assert calls == ["GET /studies/x"] * 4
    calls.clear()
    c = _client([httpx.ReadTimeout("slow")], calls)
    assert c.post("/studies/x/trials/3/reports", {"claim_token": "t"}) == {"ok": True}  # same claim: harmless
    assert c.post("/studies", {}, headers={"Idempotency-Key": "k"}) == {"ok": True}
    assert len(calls) == 3


def test_a_call_that_may_have_arrived_is_not_sent_twice():
    calls: list[str] = []
    c = _client([httpx.ReadTimeout("slow")], calls)
    with pytest.raises(ServiceUnavailable, match=r"the service at http://svc did not answer within 30 s"):
        c.post("/studies/x/trials/claim")  # a second claim would take a second trial
    assert calls == ["POST /studies/x/trials/claim"]
    # one that never left (connection refused) is sent again
    calls.clear()
    c = _client([httpx.ConnectError("refused")], calls)
    assert c.post("/studies/x/trials/claim") == {"ok": True} and len(calls) == 2


def test_retries_end_at_the_limit():
    calls: list[str] = []
    c = _client([httpx.ConnectError("refused")] * 1000, calls, timeout=1.0)
    with pytest.raises(ServiceUnavailable) as e:
        c.get("/healthz")
    assert str(e.value) == "the service at http://svc did not answer within 1 s" and 1 < len(calls) < 1000
    assert isinstance(e.value, httpx.TransportError)  # callers that caught transport errors still do


@pytest.mark.parametrize("argv", [["watch", "abc"], ["logs", "abc"], ["export", "abc"], ["queue"], ["audit"],
                                  ["suite", "watch", "abc"], ["submit", "SPEC"], ["report", "abc"]])
def test_every_command_ends_with_one_line_and_exit_2(argv, tmp_path, capsys, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = tmp_path / "s.json"
    spec.write_text('{"name": "s", "workload": "noisy_quadratic", "optimizers": ["sgd"]}')
    argv = [str(spec) if a == "SPEC" else a for a in argv]
    monkeypatch.setenv("ROOTFREE_CLIENT_TIMEOUT_S", "1")
    extra = [] if argv[0] == "report" else ["--timeout", "1"]
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--url", url, "--token", "t", *extra])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: the service at {url} did not answer within 1 s\n"


def _serve(db: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "ROOTFREE_START_RUNNER": "false"}
    p = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--db", db, "--port", str(port)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_healthy(f"http://127.0.0.1:{port}", timeout_s=90, alive=lambda: p.poll() is None)
    return p


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.kill(p.pid, signal.SIGCONT)
        p.kill()
        p.wait(timeout=30)


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
def test_watch_follows_a_study_through_a_pause_and_a_restart(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    token = make_token(db, "alice", admin=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(db, port)
    watcher = None
    try:
        study = Client(url, token).submit({**SPEC, "name": "paused"})
        watcher = subprocess.Popen([sys.executable, "-m", "service.cli", "watch", study.id, "--url", url,
                                    "--token", token, "--interval", "0.3", "--timeout", "60"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        os.kill(server.pid, signal.SIGSTOP)  # the API process paused (a machine under load, a debugger)
        time.sleep(4)
        os.kill(server.pid, signal.SIGCONT)
        time.sleep(1)
        server.kill()  # and killed: connections refused until it is back
        server.wait(timeout=30)
        time.sleep(3)
        assert watcher.poll() is None  # still following
        server = _serve(db, port)
        assert Client(url, token).post(f"/studies/{study.id}/cancel")["status"] == "cancelled"
        out, err = watcher.communicate(timeout=90)
        assert watcher.returncode == 1, err  # cancelled: watch's usual exit code
        assert "Traceback" not in err and "cancelled" in out
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
        _stop(server)
