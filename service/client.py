"""The typed Python client of the rootfree REST API (on httpx).

Submit a study and wait for it:

    from service.client import Client
    client = Client("http://127.0.0.1:8000", token)
    study = client.submit({"name": "s", "workload": "fmnist_cnn", "optimizers": ["adamw", "rfrmsprop"]})
    study.wait()
    print(study.best(), study.export())

Train an external study's trials (`execution: external`) on this machine:

    for trial in client.trials(study_id):
        with trial:                                   # completes it; an exception fails it
            opt = trial.build_optimizer(model.parameters())
            for epoch in range(1, trial.budget["epochs"] + 1):
                ...
                if not trial.report(epoch, test_error=err, train_loss=loss):
                    break                             # ASHA stopped it (or it diverged)

A script that `rootfree agent` runs finds its trial with `current_trial()`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from service.client_retry import ServiceUnavailable, client_timeout_s, send  # noqa: F401 - re-exported
from service.domain.statuses import FINISHED as TRIAL_FINISHED
from service.domain.statuses import TERMINAL

DEFAULT_URL = "http://127.0.0.1:8000"
REPORT_TIMEOUT_S = 300.0  # a report is computed on the first request: longer than a plain call
class ClientError(RuntimeError):
    """The API answered an error: `status` (HTTP) and `detail` (its message)."""

    def __init__(self, status: int, detail: str, body: Any = None):
        super().__init__(f"error {status}: {detail}")
        self.status, self.detail, self.body = status, detail, body


class StudyEnded(ClientError):
    """A claim on a study that has ended (410): nothing is left to train."""


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float | None = None,
                 http: httpx.Client | None = None):
        """`url` and `token` default to ROOTFREE_URL and ROOTFREE_TOKEN; `timeout`: how long a
        call keeps trying a service that does not answer (default ROOTFREE_CLIENT_TIMEOUT_S, else
        60 s); `http`: a ready httpx.Client to send through instead (e.g. FastAPI's TestClient)."""
        self.url = (url or os.environ.get("ROOTFREE_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("ROOTFREE_TOKEN")
        self.timeout = client_timeout_s(timeout)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._own_http = http is None
        self.http = http or httpx.Client(base_url=self.url, headers=headers, timeout=min(self.timeout, 30.0))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ plumbing
    def request(self, method: str, path: str, *, body: Any = None, ok: Iterable[int] = (),
                retry: bool = True, **kwargs: Any) -> httpx.Response:
        """One call; an answer >= 400 (not in `ok`) raises ClientError with the API's detail. No
        answer: tried again until the client's `timeout`, then ServiceUnavailable (client_retry.py)."""
        if body is not None:
            kwargs["content"] = json.dumps(body)
            kwargs["headers"] = {"Content-Type": "application/json", **kwargs.get("headers", {})}
        r = send(self.http, method, path, kwargs, url=self.url, limit_s=self.timeout, own_http=self._own_http,
                 retry=retry)
        if r.status_code >= 400 and r.status_code not in ok:
            try:
                payload = r.json()
                detail = payload.get("detail", r.text) if isinstance(payload, dict) else r.text
            except ValueError:
                payload, detail = None, r.text
            cls = StudyEnded if r.status_code == 410 else ClientError
            raise cls(r.status_code, str(detail), payload)
        return r

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        r = self.request("POST", path, body=body, **kwargs)
        return r.json() if r.content else None

    # ------------------------------------------------------------------ studies
    def submit(self, spec: dict[str, Any] | str | Path, idempotency_key: str | None = None) -> Study:
        """Submits a study (a dict, or the path of a YAML/JSON file)."""
        if not isinstance(spec, dict):
            import yaml

            spec = yaml.safe_load(Path(spec).read_text())
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        data = self.post("/studies", spec, headers=headers)
        return Study(self, data["id"], data)

    def study(self, study_id: str) -> Study:
        return Study(self, study_id, self.get(f"/studies/{study_id}"))

    def report_html(self, study_ids: Iterable[str], timeout: float = REPORT_TIMEOUT_S) -> str:
        """One HTML page over several studies, with a cross-study part."""
        params = [("study_id", s) for s in study_ids]
        return self.request("GET", "/report", params=params, timeout=timeout).text

    # ------------------------------------------------------------------ suites
    def submit_suite(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """Submits a suite (one study per workload); the suite as the API answers it."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.post("/suites", spec, headers=headers, timeout=60)

    def suite(self, suite_id: str) -> dict[str, Any]:
        """The suite: id, name, status and its studies (id, name, status)."""
        return self.get(f"/suites/{suite_id}")

    def suite_export(self, suite_id: str, format: str = "algoperf") -> bytes:  # noqa: A002 - the API's name
        """The suite's results in AlgoPerf's log layout: the bytes of a zip."""
        return self.request("GET", f"/suites/{suite_id}/export", params={"format": format},
                            timeout=REPORT_TIMEOUT_S).content

    def suite_report(self, suite_id: str, format: str = "json") -> Any:  # noqa: A002 - the API's name
        """The suite's report: its numbers (a dict), or the HTML page with format="html"."""
        r = self.request("GET", f"/suites/{suite_id}/report", params={"format": format}, timeout=REPORT_TIMEOUT_S)
        return r.text if format == "html" else r.json()

    # ------------------------------------------------------------------ the service
    def healthy(self) -> bool:
        """Whether the service answers `GET /healthz` with 200 (False too while it cannot be reached)."""
        try:
            return self.request("GET", "/healthz", ok=range(400, 600), retry=False).status_code == 200
        except httpx.HTTPError:
            return False

    def cluster(self) -> dict[str, Any]:
        """The cluster's nodes and the queue of active studies."""
        return self.get("/cluster")

    def audit(self, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        """A page of the audit trail, newest first (admins): items, total, limit, offset."""
        return self.get("/audit", params={"limit": limit, "offset": offset})

    # ------------------------------------------------------------------ external trials
    def claim(self, study_id: str) -> Trial | None:
        """One pending trial of an external study, or None when nothing may start now (204).
        Raises StudyEnded when the study has ended (410)."""
        r = self.request("POST", f"/studies/{study_id}/trials/claim")
        if r.status_code == 204:
            return None
        return Trial(self, study_id, r.json())

    def trials(self, study_id: str, *, count: int | None = None, poll_s: float = 2.0) -> Iterator[Trial]:
        """The study's trials one by one, claimed as the loop asks for the next (at most
        `count`); waits while none may start yet (e.g. stage 2 waits for stage 1); ends when the
        study has nothing left."""
        taken = 0
        while count is None or taken < count:
            try:
                trial = self.claim(study_id)
            except StudyEnded:
                return
            if trial is None:
                time.sleep(poll_s)
                continue
            taken += 1
            yield trial


class Study:
    def __init__(self, client: Client, study_id: str, data: dict[str, Any] | None = None):
        self.client, self.id, self.data = client, study_id, data or {}

    def __repr__(self) -> str:
        return f"Study({self.id!r}, status={self.status!r})"

    def refresh(self) -> dict[str, Any]:
        self.data = self.client.get(f"/studies/{self.id}")
        return self.data

    @property
    def status(self) -> str | None:
        return self.data.get("status")

    def wait(self, interval: float = 2.0, timeout: float | None = None) -> Study:
        """Polls until the study has ended (completed, failed or cancelled)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh()["status"] not in TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"study {self.id} is still {self.status} after {timeout} s")
            time.sleep(interval)
        return self

    def best(self, k: int = 1) -> dict[str, list[dict[str, Any]]]:
        """Per optimizer, its best `k` configurations (rank, trial_id, objective, hyperparameters)."""
        return self.client.get(f"/studies/{self.id}/best", params={"k": k})

    def export(self, format: str = "json", k: int = 1) -> Any:  # noqa: A002 - the API's name
        """The export document (a dict; a YAML string with format="yaml")."""
        r = self.client.request("GET", f"/studies/{self.id}/export", params={"format": format, "k": k})
        return r.text if format == "yaml" else r.json()

    def report_html(self, timeout: float = REPORT_TIMEOUT_S) -> str:
        """The study's self-contained HTML report."""
        return self.client.request("GET", f"/studies/{self.id}/report", timeout=timeout).text

    def logs(self, tail: int | None = None, offset: int | None = None) -> tuple[str, int]:
        """The study's log stream: its last `tail` lines, or what was written after byte `offset`;
        and the offset to read from next time (X-Log-Offset)."""
        params = {k: v for k, v in (("tail", tail), ("offset", offset)) if v is not None}
        r = self.client.request("GET", f"/studies/{self.id}/logs", params=params)
        return r.text, int(r.headers.get("X-Log-Offset", 0))

    def analysis(self) -> dict[str, Any]:
        return self.client.get(f"/studies/{self.id}/analysis")

    def trials(self, **params: Any) -> list[dict[str, Any]]:
        return self.client.get(f"/studies/{self.id}/trials", params={"limit": 1000, **params})


class Trial:
    """One claimed trial of an external study. Its `with` block ends it: completed (or
    stopped/diverged, when a report said so), failed with the exception's last line when the
    block raises."""

    def __init__(self, client: Client, study_id: str, claim: dict[str, Any]):
        self.client, self.study_id, self.claim = client, study_id, claim
        self.id: int = claim["trial_id"]
        self.optimizer: str = claim["optimizer"]
        self.stage: int = claim["stage"]
        self.seed: int = claim["seed"]
        self.budget: dict[str, Any] = claim["budget"]
        self.hyperparameters: dict[str, Any] = claim["hyperparameters"]
        self.workload: str = claim["workload"]
        self.schedule: str = claim["schedule"]
        self.metric: str = claim["metric"]
        self.mode: str = claim["mode"]
        self.claim_token: str = claim["claim_token"]
        self.lease_expires_at: str = claim["lease_expires_at"]
        self.should_stop = False
        self.reason: str | None = None
        self.diverged = False
        self.status: str | None = None  # set once it has ended
        self._started = self._last = time.perf_counter()

    def __repr__(self) -> str:
        return f"Trial({self.id}, {self.optimizer!r}, stage {self.stage}, {self.hyperparameters})"

    @property
    def _url(self) -> str:
        return f"/studies/{self.study_id}/trials/{self.id}"

    def build_optimizer(self, params, **overrides: Any):
        """`optimizers.build(optimizer, params, **hyperparameters)`, with what the service's own
        workers add: the batch size B of the root-free methods (from the budget) and float32
        IF-Shampoo factors off GPU. `overrides` win."""
        import torch

        import optimizers
        from workers.trial import optimizer_kwargs

        params = list(params)
        first = params[0]["params"][0] if params and isinstance(params[0], dict) else (params[0] if params else None)
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
        kw = optimizer_kwargs(self.optimizer, self.hyperparameters, int(self.budget.get("batch_size", 1)), device)
        return optimizers.build(self.optimizer, params, **{**kw, **overrides})

    def report(self, epoch: int, **metrics: float) -> bool:
        """Reports one epoch (the study's metric among `metrics`); True: go on, False: stop
        (ASHA stopped it at its rung, it diverged, or it has ended). A non-finite value is not
        sent: the trial ends as diverged. epoch_time_s, wall_time_s and peak_memory_mb are added
        unless given (the analysis' time per epoch and memory, as for the service's own trials)."""
        now = time.perf_counter()
        metrics.setdefault("epoch_time_s", now - self._last)
        metrics.setdefault("wall_time_s", now - self._started)
        metrics.setdefault("peak_memory_mb", _peak_memory_mb())
        self._last = now
        values = {k: float(v) for k, v in metrics.items()}
        if not all(math.isfinite(v) for v in values.values()):
            bad = sorted(k for k, v in values.items() if not math.isfinite(v))
            self.diverged, self.should_stop = True, True
            self.reason = f"diverged: {', '.join(bad)} not finite at epoch {epoch}"
            return False
        answer = self.client.post(f"{self._url}/reports",
                                  {"claim_token": self.claim_token, "epoch": epoch, "metrics": values})
        self.should_stop, self.reason = bool(answer["should_stop"]), answer.get("reason")
        return not self.should_stop

    def complete(self, status: str | None = None, **metrics: float) -> str:
        """Ends the trial (default: completed; stopped after a stop, diverged after a non-finite
        report); returns the status the service records."""
        if status is None and self.should_stop and not self.diverged:
            # the service ended the trial when it answered should_stop (ASHA, a divergence, the
            # study's end): its status stands (completing it as another status is a 409)
            recorded = self.client.get(self._url)["status"]
            if recorded in TRIAL_FINISHED:
                self.status = recorded
                return recorded
        status = status or ("diverged" if self.diverged else "stopped" if self.should_stop else "completed")
        body: dict[str, Any] = {"claim_token": self.claim_token, "status": status}
        if metrics:
            body["metrics"] = {k: float(v) for k, v in metrics.items()}
        self.status = self.client.post(f"{self._url}/complete", body)["status"]
        return self.status

    def heartbeat(self) -> bool:
        """Renews the claim's lease without a report; False once the trial has ended."""
        answer = self.client.post(f"{self._url}/heartbeat", {"claim_token": self.claim_token})
        return answer["lease_expires_at"] is not None

    def keep_alive(self) -> Heartbeat:
        """A background thread that renews the lease while this process lives (an epoch may
        outlast the lease); stop it with `.stop()`. The `with` block runs one."""
        return Heartbeat(self)

    def fail(self, reason: str) -> str:
        self.status = self.client.post(f"{self._url}/fail", {"claim_token": self.claim_token,
                                                             "reason": reason[-2000:] or "failed"})["status"]
        return self.status

    def __enter__(self) -> Trial:
        self._heartbeat = self.keep_alive()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        heartbeat = getattr(self, "_heartbeat", None)
        if heartbeat is not None:
            heartbeat.stop()
        if self.status is not None:
            return  # ended inside the block
        if exc is None:
            self.complete()
            return
        # The user's exception is what the caller sees: a failure to record it (the service
        # unreachable, the claim lost) must not replace it (issue 30).
        reason = ("interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt)
                  else traceback.format_exception_only(exc_type, exc)[-1].strip())
        try:
            self.fail(reason)
        except (ClientError, httpx.HTTPError) as e:
            print(f"rootfree: could not record trial {self.id} as failed ({e})", file=sys.stderr)


class Heartbeat:
    """Renews a trial's claim every third of its lease until stopped, the trial ends, or the
    claim is lost (a network error is retried at the next beat)."""

    def __init__(self, trial: Trial):
        from datetime import UTC, datetime

        self.trial = trial
        try:
            expires = datetime.fromisoformat(trial.lease_expires_at)
            lease_s = (expires - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            lease_s = 600.0
        self.interval = max(0.5, lease_s / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rootfree-heartbeat-{trial.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.trial.heartbeat():
                    return
            except ClientError:
                return  # the claim is gone (409) or the study is: nothing left to keep alive
            except httpx.HTTPError:
                continue

    def stop(self) -> None:
        self._stop.set()


def _peak_memory_mb() -> float:
    """What the service's own workers report: the GPU's peak allocation when torch uses one, else
    this process's peak resident memory."""
    torch = sys.modules.get("torch")  # never imported here only for this
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_trial(client: Client | None = None) -> Trial:
    """The trial `rootfree agent` runs this process for (ROOTFREE_TRIAL: the claim response as
    JSON; ROOTFREE_STUDY_ID, ROOTFREE_URL, ROOTFREE_TOKEN in the environment)."""
    raw = os.environ.get("ROOTFREE_TRIAL")
    if not raw:
        raise RuntimeError("ROOTFREE_TRIAL is not set: run this script with `rootfree agent STUDY_ID -- "
                           "python script.py`, or claim trials with Client.trials(study_id)")
    claim = json.loads(raw)
    study_id = os.environ.get("ROOTFREE_STUDY_ID") or claim.get("study_id")
    if not study_id:
        raise RuntimeError("ROOTFREE_STUDY_ID is not set (rootfree agent sets it with ROOTFREE_TRIAL)")
    client = client or Client(os.environ.get("ROOTFREE_URL"), os.environ.get("ROOTFREE_TOKEN"))
    return Trial(client, study_id, claim)
