"""How the API's costs grow with the size of a study (issue 19): a study of N finished trials with
5 epochs each, on SQLite and on PostgreSQL, at N = 1,000 and 10,000.

    python bench/store_scale.py [--sizes 1000 10000] [--dbs sqlite postgres] [--epochs 5]
                                [--pg-admin postgresql+psycopg://postgres@127.0.0.1:5432/test]

For each database and size: builds the store with the project's own store code (StudyStore:
create_study, ensure_trials, save_stage_space; then the per-epoch reports and the trials' final
state written in bulk, which is only faster to build), 3 optimizers x 2 stages, then starts the
real API server (uvicorn, a subprocess, runner off, token auth as `serve` runs it) on that store
and times, at the client: `GET /studies/{id}`, the last 1000-row trials page (by `after_id`, and by
`offset` for comparison), `/best`, `/export`, `/analysis` and `/report` (the first request computes,
the next is served from the cache until the study changes), `GET /studies?limit=1000` over 50
small studies plus this one, and `DELETE`; then the API process's peak RSS (VmHWM).
Medians of 5 requests where a request is repeatable. Prints one table per database with the
growth ratio from the smallest to the largest size beside the n log n bound.
Target: each under 2 s and under 300 MB at 10,000 trials, growing no faster than n log n.
"""

from __future__ import annotations

import argparse
import math
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
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, and this tree's service

from service.api.auth import create_token  # noqa: E402 - after the path
from service.api.schemas import StudySpec  # noqa: E402 - after the path
from service.store.models import Report, Trial  # noqa: E402 - after the path
from service.store.study_store import StudyStore  # noqa: E402 - after the path
from tests.support import free_port  # noqa: E402 - after the path

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = ["sgd", "adamw", "rfrmsprop"]


def _sample(dist: dict, rng: random.Random):
    kind = dist.get("kind")
    if kind == "log_uniform":
        return math.exp(rng.uniform(math.log(dist["low"]), math.log(dist["high"])))
    if kind == "one_minus_log_uniform":
        return 1 - math.exp(rng.uniform(math.log(1 - dist["high"]), math.log(1 - dist["low"])))
    if kind == "uniform":
        return rng.uniform(dist["low"], dist["high"])
    if kind == "choice":
        return rng.choice(dist["choices"])
    return dist.get("value")


def build(url: str, n: int, epochs: int, seed: int = 0) -> str:
    """A completed study of `n` trials (3 optimizers x 2 stages), each with `epochs` reports."""
    rng = random.Random(seed)
    per_opt = n // len(OPTIMIZERS)
    stages = [per_opt // 2, per_opt - per_opt // 2]
    spec = StudySpec(name=f"scale-{n}", workload="noisy_quadratic", optimizers=OPTIMIZERS,
                     protocol={"stages": stages, "top_k": 5, "seed": seed}).resolved()
    store = StudyStore(url)
    study, _ = store.create_study(spec, None, owner="bench")
    metric = spec.metric
    for opt in OPTIMIZERS:
        space = spec.search_spaces[opt]
        for stage, size in enumerate(stages, start=1):
            store.save_stage_space(study.id, opt, stage, space, [])
            store.ensure_trials(study.id, opt, stage,
                                [{k: _sample(d, rng) for k, d in space.items()} for _ in range(size)])
    ids = [t.id for t in store.trials(study.id)]
    reports, finals = [], []
    for tid in ids:
        level = rng.lognormvariate(0, 1)
        diverged = rng.random() < 0.05
        for e in range(1, epochs + 1):
            value = None if diverged and e == epochs else level * (1 + 1 / e)
            reports.append({"trial_id": tid, "epoch": e, "row": {
                "epoch": e, metric: value, "train_loss": value, "epoch_time_s": 0.2 + rng.random() * 0.05,
                "peak_memory_mb": 180 + rng.random() * 20, "wall_time_s": 0.25 * e,
                **({"status": "diverged" if diverged else "completed"} if e == epochs else {})}})
        finals.append({"tid": tid, "status": "diverged" if diverged else "completed",
                       "objective": None if diverged else level * (1 + 1 / epochs), "epochs": epochs,
                       "metrics": {metric: None if diverged else level * (1 + 1 / epochs), "epoch": epochs}})
    with store.engine.begin() as conn:
        for i in range(0, len(reports), 5000):
            conn.execute(sa.insert(Report), reports[i:i + 5000])
        conn.execute(sa.update(Trial).where(Trial.id == sa.bindparam("tid")).values(
            status=sa.bindparam("status"), objective=sa.bindparam("objective"), epochs=sa.bindparam("epochs"),
            metrics=sa.bindparam("metrics"), runs=1), finals)
    for i in range(50):  # other studies for the list endpoint
        small = StudySpec(name=f"small-{i}", workload="noisy_quadratic", optimizers=["sgd"],
                          protocol={"stages": [2], "top_k": 2, "seed": i}).resolved()
        s, _ = store.create_study(small, None, owner="bench")
        store.ensure_trials(s.id, "sgd", 1, [{"lr": 0.1}, {"lr": 0.01}])
        store.set_status(s.id, "completed")
    store.set_status(study.id, "completed")
    store.engine.dispose()
    return study.id


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(url: str, sid: str) -> dict[str, float]:
    engine = sa.create_engine(url)
    token, _ = create_token(engine, "bench", admin=True, actor="bench")
    engine.dispose()
    port = free_port()
    env = {**os.environ, "ROOTFREE_DATABASE_URL": url, "ROOTFREE_START_RUNNER": "false",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    out: dict[str, float] = {}
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=900) as c:
            for _ in range(600):
                try:
                    if c.get("/studies", params={"limit": 1}).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            out["RSS at start (MB)"] = rss_mb(proc.pid, "VmRSS")

            def once(method: str, path: str, **kw) -> float:
                t = time.perf_counter()
                r = c.request(method, path, **kw)
                elapsed = time.perf_counter() - t
                assert r.status_code < 300, (path, r.status_code, r.text[:300])
                return elapsed * 1000

            def median(path: str, repeat: int = 5, **kw) -> float:
                return statistics.median(once("GET", path, **kw) for _ in range(repeat))

            body = c.get(f"/studies/{sid}").json()
            total = sum(st["total"] for o in body["optimizers"] for st in o["stages"].values())
            last = max(0, total - 1000)  # the last page starts here
            after = c.get(f"/studies/{sid}/trials", params={"limit": 1, "offset": last - 1}).json()[0]["id"] \
                if last else None
            out["GET /studies/{id}"] = median(f"/studies/{sid}")
            keyset = {"limit": 1000, **({"after_id": after} if after else {})}
            out["trials, last 1000 (after_id)"] = median(f"/studies/{sid}/trials", params=keyset)
            out["trials, last 1000 (offset)"] = median(f"/studies/{sid}/trials",
                                                       params={"limit": 1000, "offset": last})
            out["GET /studies?limit=1000"] = median("/studies", params={"limit": 1000})
            out["/best?k=5"] = median(f"/studies/{sid}/best")
            out["/export"] = median(f"/studies/{sid}/export")
            out["/analysis (first)"] = once("GET", f"/studies/{sid}/analysis")
            out["/analysis (cached)"] = median(f"/studies/{sid}/analysis")
            out["/report (first)"] = once("GET", f"/studies/{sid}/report")
            out["/report (cached)"] = median(f"/studies/{sid}/report", repeat=3)
            out["DELETE /studies/{id}"] = once("DELETE", f"/studies/{sid}")
            out["peak RSS (MB)"] = rss_mb(proc.pid)
            out["peak RSS - RSS at start (MB)"] = out["peak RSS (MB)"] - out["RSS at start (MB)"]
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def pg_database(admin: str) -> tuple[str, callable]:
    name = f"rootfree_scale_{uuid.uuid4().hex[:8]}"
    eng = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop():
        with eng.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        eng.dispose()

    return admin.rsplit("/", 1)[0] + f"/{name}", drop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--dbs", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--pg-admin", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    sizes = sorted(args.sizes)
    for db in args.dbs:
        results = {}
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                if db == "sqlite":
                    url, drop = f"sqlite:///{tmp}/scale.db", (lambda: None)
                else:
                    url, drop = pg_database(args.pg_admin)
                try:
                    t = time.perf_counter()
                    sid = build(url, n, args.epochs)
                    print(f"[{db}] built {n} trials x {args.epochs} epochs in {time.perf_counter() - t:.0f} s",
                          file=sys.stderr, flush=True)
                    results[n] = measure(url, sid)
                finally:
                    drop()
        lo, hi = sizes[0], sizes[-1]
        bound = (hi * math.log(hi)) / (lo * math.log(lo))
        print(f"\n{db}: ms at the client (median of 5 where repeatable), {args.epochs} epochs per trial")
        header = f"{'':32}" + "".join(f"{f'n={n:,}':>12}" for n in sizes) + f"{'ratio':>9}{'n log n':>9}"
        print(header)
        for key in results[lo]:
            vals = [results[n][key] for n in sizes]
            ratio = vals[-1] / vals[0] if vals[0] else float("nan")
            print(f"{key:32}" + "".join(f"{v:12.0f}" for v in vals) + f"{ratio:9.2f}{bound:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
