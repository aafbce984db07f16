"""A rootfree service on this machine, as `rootfree demo` starts one: a free port, waiting until a
just-started server answers, and where Ray keeps the dashboard's token. (The tests and bench/
use them through tests/support.)"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from service.client import Client


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 60.0, alive=lambda: True) -> bool:
    """Polls `GET {url}/healthz` until it answers 200 (True), or `timeout_s` passes or `alive()`
    turns false (False): how every caller waits for a `rootfree serve` it has just started."""
    deadline = time.monotonic() + timeout_s
    with Client(url, "", timeout=2) as client:  # /healthz needs no token
        while time.monotonic() < deadline and alive():
            if client.healthy():
                return True
            time.sleep(0.2)
    return False


def ray_auth_token_file() -> Path:
    """Where Ray keeps the token its dashboard asks for (Ray 2.60 turns token auth on by default
    for a local `ray.init()`)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
