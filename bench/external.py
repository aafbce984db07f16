"""Round trip of an external trial (issue #22): claim + report + complete, at 20 concurrent agents.

    python bench/external.py [--agents 20] [--rounds 15] [--epochs 1] [--no-postgres]

For each store (SQLite in a temporary directory; PostgreSQL on 127.0.0.1:5432 in a fresh
database, unless --no-postgres or the server does not answer) it starts the real API in its own
process (uvicorn, tokens on as `serve` runs, runner off: the bench opens the study's stage with
the runner's own StageMachine), submits an external study with enough trials, and runs
`--agents` concurrent agents, each with its own keep-alive connection, each looping
claim -> `--epochs` reports -> complete as fast as the API answers (a closed loop: the worst case;
real agents train between calls: `--think-s` pauses that long on average between trials). Two
warm-up rounds per agent are not measured.

Prints p50 / p90 / p99 / max (ms, at the client) per call and for the whole round trip, and the
round trips per second, the stores side by side. Each agent also times a baseline after each
round trip: as many authenticated reads of the same trial (`GET /studies/{id}/trials/{tid}`, the
cheapest authenticated route with a database read), so the ratio shows what the protocol's
writes cost over what the API and this machine's load cost any request. Target (issue #22): round trip p99 < 50 ms.
The clients are lean HTTP/1.1 over asyncio streams (see bench/api_latency.py: httpx's own CPU
cost on this 2-core machine would sit in the measured tail).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, and this tree's service

from tests.support import free_port, wait_healthy  # noqa: E402 - after the path

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class LeanClient:
    """One keep-alive HTTP/1.1 connection; POST with a JSON body, Content-Length answers."""

    def __init__(self, port: int, token: str):
        self.port, self.auth = port, f"Authorization: Bearer {token}\r\n"
        self.reader = self.writer = None

    async def post(self, path: str, body: dict | None = None, method: str = "POST") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = json.dumps(body).encode() if body is not None else b""
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.auth}Content-Type: application/json"
                          f"\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()


def start_api(db_url: str, port: int, log: Path) -> subprocess.Popen:
    code = ("import uvicorn; from service.app import create_app; from service.settings import Settings; "
            f"uvicorn.run(create_app(Settings(database_url={db_url!r}, start_runner=False)), "
            f"host='127.0.0.1', port={port}, log_level='warning')")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def prepare(db_url: str, port: int, trials: int) -> tuple[str, str]:
    """A user's token and an external study with `trials` pending trials (stage 1 opened)."""
    from service.api.auth import create_token
    from service.control.stages import StageMachine
    from service.store.study_store import StudyStore

    store = StudyStore(db_url)
    token, _ = create_token(store.engine, "bench", admin=False, actor="bench")
    spec = {"name": "bench-external", "workload": "noisy_quadratic", "optimizers": ["sgd"],
            "execution": "external", "protocol": {"stages": [trials], "top_k": 2},
            "max_concurrent_trials": 1024, "budget": {"epochs": 3}}
    r = httpx.post(f"http://127.0.0.1:{port}/studies", json=spec, headers={"Authorization": f"Bearer {token}"},
                   timeout=30)
    r.raise_for_status()
    sid = r.json()["id"]
    store.set_status(sid, "running", only_from=("queued",))
    StageMachine(store).advance(store.get_study(sid))
    store.engine.dispose()
    return token, sid


async def agent(port: int, token: str, sid: str, rounds: int, epochs: int, warmup: int,
                times: dict[str, list[float]], think_s: float = 0.0) -> None:
    c = LeanClient(port, token)
    try:
        for i in range(warmup + rounds):
            t0 = time.perf_counter()
            status, body = await c.post(f"/studies/{sid}/trials/claim")
            t1 = time.perf_counter()
            assert status == 200, (status, body)
            claim = json.loads(body)
            url, tok = f"/studies/{sid}/trials/{claim['trial_id']}", claim["claim_token"]
            report_s = []
            for epoch in range(1, epochs + 1):
                r0 = time.perf_counter()
                status, body = await c.post(f"{url}/reports", {"claim_token": tok, "epoch": epoch,
                                                               "metrics": {"loss": 1.0 / epoch + i * 1e-3}})
                report_s.append(time.perf_counter() - r0)
                assert status == 200, (status, body)
            t2 = time.perf_counter()
            status, body = await c.post(f"{url}/complete", {"claim_token": tok, "status": "completed"})
            t3 = time.perf_counter()
            assert status == 200, (status, body)
            # the baseline: as many authenticated reads of the same trial (GET /studies/{id}/trials/{tid})
            b0 = time.perf_counter()
            for _ in range(2 + epochs):
                status, body = await c.post(url, method="GET")
                assert status == 200, (status, body)
            b1 = time.perf_counter()
            if i >= warmup:
                times["claim"].append(t1 - t0)
                times["report"].extend(report_s)
                times["complete"].append(t3 - t2)
                times["round trip"].append(t3 - t0)
                times["baseline"].append(b1 - b0)
            if think_s:  # training between trials, jittered so the agents do not march in step
                await asyncio.sleep(think_s * (0.5 + random.random()))
    finally:
        await c.aclose()


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))] * 1000


async def measure(port: int, token: str, sid: str, args) -> tuple[dict[str, list[float]], float]:
    times: dict[str, list[float]] = {"claim": [], "report": [], "complete": [], "round trip": [], "baseline": []}
    t0 = time.perf_counter()
    await asyncio.gather(*(agent(port, token, sid, args.rounds, args.epochs, 2, times, args.think_s)
                           for _ in range(args.agents)))
    return times, time.perf_counter() - t0


def run_store(name: str, db_url: str, args, tmp: Path) -> dict[str, list[float]] | None:
    port = free_port()
    proc = start_api(db_url, port, tmp / f"api-{name}.log")
    try:
        if not wait_healthy(f"http://127.0.0.1:{port}", timeout_s=120, alive=lambda: proc.poll() is None):
            print(f"{name}: the API did not start:\n{(tmp / f'api-{name}.log').read_text()[-2000:]}")
            return None
        token, sid = prepare(db_url, port, args.agents * (args.rounds + 2))
        times, wall = asyncio.run(measure(port, token, sid, args))
        times["_rate"] = [len(times["round trip"]) / wall]
        return times
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=15, help="measured claim-report-complete rounds per agent")
    ap.add_argument("--epochs", type=int, default=1, help="reports per trial")
    ap.add_argument("--think-s", type=float, default=0.0,
                    help="mean pause between an agent's trials (0: closed loop, the worst case)")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = run_store("sqlite", f"sqlite:///{tmp / 'studies.db'}", args, tmp)
        if out:
            results["sqlite"] = out
        if not args.no_postgres:
            import sqlalchemy as sa

            name = f"rootfree_bench_{uuid.uuid4().hex[:8]}"
            try:
                admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
                with admin.connect() as c:
                    c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            except Exception as e:  # noqa: BLE001 - no PostgreSQL here: SQLite only
                print(f"postgresql: skipped ({type(e).__name__}: {str(e).splitlines()[0]})")
            else:
                try:
                    out = run_store("postgresql", f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", args, tmp)
                    if out:
                        results["postgresql"] = out
                finally:
                    with admin.connect() as c:
                        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    admin.dispose()
    loop = f"{args.think_s:g} s mean pause between trials" if args.think_s else "closed loop"
    print(f"\n{args.agents} concurrent agents, {args.rounds} measured rounds each (claim, {args.epochs} report(s), "
          f"complete), {loop}; ms at the client")
    print(f"{'store':<12}{'call':<12}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for store, times in results.items():
        for call in ("claim", "report", "complete", "round trip", "baseline"):
            v = times[call]
            print(f"{store:<12}{call:<12}{len(v):>6}{pct(v, 50):>9.1f}{pct(v, 90):>9.1f}{pct(v, 99):>9.1f}"
                  f"{max(v) * 1000:>9.1f}")
        print(f"{store:<12}{'round trips/s':<24}{times['_rate'][0]:>9.1f}")
    if len(results) == 2:
        a, b = results["sqlite"]["round trip"], results["postgresql"]["round trip"]
        print(f"round trip p50 postgresql/sqlite: {pct(b, 50) / pct(a, 50):.2f}x, p99: {pct(b, 99) / pct(a, 99):.2f}x")
    for store, times in results.items():
        rt, base = times["round trip"], times["baseline"]
        print(f"{store}: round trip / baseline (the same number of authenticated reads, same load): "
              f"p50 {pct(rt, 50) / pct(base, 50):.2f}x, p99 {pct(rt, 99) / pct(base, 99):.2f}x")
    for store, times in results.items():
        p99 = pct(times["round trip"], 99)
        print(f"target round trip p99 < 50 ms, {store}: {p99:.1f} ms ({'met' if p99 < 50 else 'NOT met'})")
    means = ", ".join(f"{s} {statistics.fmean(t['round trip']) * 1000:.1f} ms" for s, t in results.items())
    print(f"(mean round trip: {means})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
