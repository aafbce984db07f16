"""The Python client's patience with a slow service (service/client/): a call that gets no
answer is tried again with backoff until the client's limit (`--timeout`,
ROOTFREE_CLIENT_TIMEOUT_S, default 60 s) has passed, then ends as `ServiceUnavailable`, which
every CLI command reports as one line and exit code 2 (issue 30)."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

DEFAULT_TIMEOUT_S = 60.0  # ROOTFREE_CLIENT_TIMEOUT_S: how long a call keeps retrying a slow service
ATTEMPT_S = 30.0  # the most one attempt waits for its answer (a busy server answers late, not never)
# Nothing reached the server: any call may be sent again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Calls that mean the same when sent twice (an external trial's writes answer a retry under the
# same claim as they answered the first time; service/control/external_trials.py).
_IDEMPOTENT_POSTS = ("/reports", "/complete", "/fail", "/heartbeat")


def client_timeout_s(value: float | None = None) -> float:
    """The retry limit: `value`, else ROOTFREE_CLIENT_TIMEOUT_S, else DEFAULT_TIMEOUT_S."""
    if value is None:
        try:
            value = float(os.environ.get("ROOTFREE_CLIENT_TIMEOUT_S", DEFAULT_TIMEOUT_S))
        except ValueError:
            value = DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


class ServiceUnavailable(httpx.TransportError):
    """The service did not answer (connection refused, timed out) within the client's limit,
    retries included. Its message is the CLI's one line (after "error: ")."""

    def __init__(self, url: str, limit_s: float):
        super().__init__(f"the service at {url} did not answer within {limit_s:g} s")
        self.url, self.limit_s = url, limit_s


def send(http: httpx.Client, method: str, path: str, kwargs: dict[str, Any], *, url: str, limit_s: float,
         own_http: bool, retry: bool = True) -> httpx.Response:
    """`http.request(method, path, **kwargs)`, tried until `limit_s` has passed. A call that may
    have reached the server is sent again only when that is harmless: reads, an
    Idempotency-Key, an external trial's writes. A call given its own `timeout` (a report's long
    computation) gets one attempt at reading: its TimeoutException is the caller's to explain.
    A 502/503/504 (a proxy before a restarting service) is retried like no answer."""
    own_timeout = "timeout" in kwargs
    idempotent = (method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
                  or "Idempotency-Key" in kwargs.get("headers", {}) or path.endswith(_IDEMPOTENT_POSTS))
    start, delay = time.monotonic(), 0.25
    while True:
        remaining = limit_s - (time.monotonic() - start)
        if own_http and not own_timeout:  # one attempt never outlives the limit
            kwargs["timeout"] = max(1.0, min(ATTEMPT_S, remaining))
        try:
            r = http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            again = retry and (isinstance(e, _NOT_SENT) or (idempotent and not own_timeout))
            remaining = limit_s - (time.monotonic() - start)
            if not again or remaining <= 0:
                if own_timeout and isinstance(e, httpx.TimeoutException) and not isinstance(e, _NOT_SENT):
                    raise
                raise ServiceUnavailable(url, limit_s) from e
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 4.0)
            continue
        if r.status_code in (502, 503, 504) and idempotent and retry and time.monotonic() - start + delay < limit_s:
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
            continue
        return r
