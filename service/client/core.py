"""The client itself (`Client`: one HTTP layer, retried reads) and a submitted study (`Study`);
`current_trial()` finds the trial `rootfree agent` runs a script for."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from service.client.errors import ClientError, StudyEnded
from service.client.retry import client_timeout_s, send
from service.client.trial import Trial
from service.domain.statuses import TERMINAL

DEFAULT_URL = "http://127.0.0.1:8000"
REPORT_TIMEOUT_S = 300.0  # a report is computed on the first request: longer than a plain call


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
