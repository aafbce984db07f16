"""Latency of `GET /studies/{id}` with 50 concurrent clients while a study runs (issue #5).

    python bench/api_latency.py [--clients 50] [--duration 20] [--interval 0.5] [--db URL]
                                [--auth tokens|none]

Starts a real `rootfree serve` process (SQLite in a temporary directory unless --db names another
store, local Ray on 2 CPUs), submits a real study (fmnist_cnn, adamw + rfrmsprop, small budget)
and, once trials are running and some have finished, runs `--clients` concurrent clients, each
with its own keep-alive connection, polling the study every `--interval` seconds (a person or a
dashboard watching it; `rootfree watch` polls every 2 s) for `--duration` seconds. Then the study
is cancelled and the same clients run again against the idle controller, so the two rows are side
by side in one run. `--interval 0` gives the closed-loop saturation throughput instead.

Reports p50 / p90 / p99 / max latency (ms, measured at the client) and requests per second.
The clients speak HTTP/1.1 keep-alive over plain asyncio streams: the instrument shares the
machine's cores with the controller and the trials, and httpx's per-request CPU cost (about 10x
more) was itself adding queueing delay to the measured tail (`--client httpx` shows it).
Target (issue #5): p99 under 50 ms while the study runs.

Authentication (issue #14): with `--auth tokens` (the default, as `serve` runs) every request
carries a bearer token; `--auth none` runs the controller without authentication, for the
before/after comparison. Either way the run ends with an in-process measurement, side by side:
the cost per call of `GET /studies/{id}` with a token checked vs without authentication
(alternating blocks of requests through one app), which isolates what the hash lookup adds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, and this tree's service

from tests.support import finished_trials, free_port, wait_healthy  # noqa: E402 - after the path

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "name": "bench-api-latency", "workload": "fmnist_cnn", "optimizers": ["adamw", "rfrmsprop"],
    "protocol": {"stages": [40, 20], "top_k": 5, "seed": 0},
    "budget": {"epochs": 2, "train_subset": 1000, "test_subset": 500, "width": 8, "batch_size": 64},
    "resources": {"cpu": 1, "gpu": 0}, "max_concurrent_trials": 2,
}


class _LeanClient:
    """One keep-alive HTTP/1.1 connection; GET only, Content-Length bodies (what uvicorn sends)."""

    def __init__(self, url: str, headers: dict | None = None):
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        u = urlsplit(url)
        self.host, self.port, self.path = u.hostname, u.port, u.path or "/"
        self.reader = self.writer = None

    async def get(self, _url: str | None = None) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}\r\n".encode())
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _client(c, url: str, start: float, until: float, interval: float,
                  out: list[float], errors: list[str]) -> None:
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        try:
            r = await c.get(url)
            status = r if isinstance(r, int) else r.status_code
            if status != 200:
                errors.append(str(status))
        except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError) as e:
            errors.append(type(e).__name__)
        dt = time.perf_counter() - t0
        out.append(dt)
        if interval:
            await asyncio.sleep(max(0.0, interval - dt))


async def _load(url: str, clients: int, duration: float, interval: float, kind: str = "lean",
                headers: dict | None = None) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    # Every client opens its connection before the clock starts: creating 50 httpx clients
    # blocks this event loop for about a second, which would otherwise be counted as latency.
    pool = [httpx.AsyncClient(timeout=10, headers=headers) if kind == "httpx" else _LeanClient(url, headers)
            for _ in range(clients)]
    try:
        await asyncio.gather(*(c.get(url) for c in pool))
        t0 = time.perf_counter()
        until = t0 + duration
        # Independent watchers: first requests spread over one interval.
        await asyncio.gather(*(_client(c, url, t0 + (interval * i / clients if interval else 0), until,
                                       interval, lat, errors) for i, c in enumerate(pool)))
        wall = time.perf_counter() - t0
    finally:
        await asyncio.gather(*(c.aclose() for c in pool))
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {"requests": len(lat), "errors": len(errors), "rps": len(lat) / wall,
            "p50": q[49] * 1e3, "p90": q[89] * 1e3, "p99": q[98] * 1e3, "max": max(lat) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between one client's requests")
    ap.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite in a temporary directory)")
    ap.add_argument("--client", choices=["lean", "httpx"], default="lean",
                    help="the load generator's HTTP client (default: plain asyncio streams)")
    ap.add_argument("--auth", choices=["tokens", "none"], default="tokens",
                    help="run the controller with bearer tokens (default) or without authentication")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or f"sqlite:///{tmp}/bench.db"
        headers = {}
        if args.auth == "tokens":
            from service.api.auth import create_token
            from service.store.study_store import StudyStore

            headers = {"Authorization": f"Bearer {create_token(StudyStore(db).engine, 'bench')[0]}"}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "ROOTFREE_DATABASE_URL": db, "ROOTFREE_AUTH": args.auth,
               "ROOTFREE_NUM_CPUS": "2", "ROOTFREE_DASHBOARD": "false",
               "ROOTFREE_STORAGE_PATH": f"{tmp}/runs", "RAY_USAGE_STATS_ENABLED": "0"}
        log = open(f"{tmp}/serve.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if not wait_healthy(base, alive=lambda: proc.poll() is None):
                raise SystemExit("the controller did not start:\n" + Path(f"{tmp}/serve.log").read_text()[-3000:])
            sid = httpx.post(f"{base}/studies", json=SPEC, headers=headers, timeout=30).json()["id"]
            url = f"{base}/studies/{sid}"
            t0 = time.time()
            while True:
                study = httpx.get(url, headers=headers, timeout=10).json()
                if study["status"] == "running" and finished_trials(study) >= 4:
                    break
                if study["status"] in ("failed", "completed", "cancelled") or time.time() - t0 > 600:
                    raise SystemExit(f"study {study['status']} before the measurement: {study.get('error')}")
                time.sleep(1)
            busy = asyncio.run(_load(url, args.clients, args.duration, args.interval, args.client, headers))
            study = httpx.get(url, headers=headers, timeout=10).json()
            running = study["status"] == "running"
            trials_seen = finished_trials(study)
            httpx.post(f"{url}/cancel", headers=headers, timeout=30)
            for _ in range(120):
                if httpx.get(url, headers=headers, timeout=10).json()["status"] in ("cancelled", "completed", "failed"):
                    break
                time.sleep(0.5)
            time.sleep(5)  # let Tune tear the cancelled stage down: "idle" means idle
            idle = asyncio.run(_load(url, args.clients, args.duration, args.interval, args.client, headers))
        finally:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)

    print(f"auth: {args.auth}")
    print(f"GET /studies/{{id}}: {args.clients} {args.client} clients, one request per {args.interval:g} s each, "
          f"{args.duration:g} s per row; the study had {trials_seen} finished trials"
          f"{'' if running else ' (NOTE: it was no longer running at the end of the busy row)'}")
    print(f"{'controller':<16}{'requests':>9}{'errors':>7}{'req/s':>8}{'p50 ms':>8}{'p90 ms':>8}"
          f"{'p99 ms':>8}{'max ms':>8}")
    for label, r in (("study running", busy), ("idle", idle)):
        print(f"{label:<16}{r['requests']:>9}{r['errors']:>7}{r['rps']:>8.1f}{r['p50']:>8.1f}{r['p90']:>8.1f}"
              f"{r['p99']:>8.1f}{r['max']:>8.1f}")
    print(f"p99 running / idle = {busy['p99'] / idle['p99']:.2f}x; target (issue #5): p99 < 50 ms while the study runs")
    auth_cost()


def auth_cost(blocks: int = 10, per_block: int = 200) -> None:
    """In one process, alternating blocks: GET /studies/{id} through an app with tokens and
    through one without authentication; prints the median per-call times and the difference."""
    from fastapi.testclient import TestClient

    from service.api.auth import create_token
    from service.app import create_app
    from service.settings import Settings
    from service.store.study_store import StudyStore

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/auth.db"
        token = create_token(StudyStore(db).engine, "bench")[0]
        apps = {mode: create_app(Settings(database_url=db, start_runner=False, auth=mode))
                for mode in ("tokens", "none")}
        with TestClient(apps["tokens"], headers={"Authorization": f"Bearer {token}"}) as with_token, \
                TestClient(apps["none"]) as without:
            sid = with_token.post("/studies", json=SPEC).json()["id"]
            times: dict[str, list[float]] = {"tokens": [], "none": []}
            for _ in range(blocks):
                for mode, client in (("tokens", with_token), ("none", without)):
                    t0 = time.perf_counter()
                    for _ in range(per_block):
                        assert client.get(f"/studies/{sid}").status_code == 200
                    times[mode].append((time.perf_counter() - t0) / per_block * 1e3)
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"in-process GET /studies/{{id}}, {blocks} alternating blocks of {per_block}: with a token "
          f"{med['tokens']:.3f} ms/call, without authentication {med['none']:.3f} ms/call; the token check "
          f"adds {med['tokens'] - med['none']:.3f} ms/call (target: well under 1 ms)")


if __name__ == "__main__":
    main()
