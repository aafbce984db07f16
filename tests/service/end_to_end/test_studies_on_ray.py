"""End to end on a real local Ray with real data and tiny budgets, against SQLite and PostgreSQL:
five studies at once (a two-optimizer Fashion-MNIST study, a noisy-quadratic one of higher
priority, an ASHA study, a TPE study and a long-trial noisy-quadratic one) through two real
`rootfree serve` processes on one database, one leader and one standby. The leader is SIGKILLed
mid-study; the standby takes its lease over once it lapses and every study resumes (a trial that
was mid-way goes on from its checkpoint) and ends with exact counts.

One test, not two: a controller killed and restarted, and a leader killed under a waiting standby,
started the same controllers and studies twice (issue 31 merged them; the takeover half came from
`test_faults.py`)."""

import math
import re
import time

import pytest

from tests.service.end_to_end.test_faults import assert_exact as assert_every_epoch_once
from tests.service.end_to_end.test_faults import nqm, trials
from tests.support import finished_trials, free_port, ray_auth_token_file
from tests.support.ray_runner import ENDED, wait
from tests.support.serving import api, health, kill, serve, wait_for

pytestmark = pytest.mark.slow

SPEC = {
    "name": "e2e", "workload": "fmnist_vit", "optimizers": ["adamw", "rfrmsprop"],
    "protocol": {"stages": [3, 2], "top_k": 2, "seed": 1},
    "budget": {"epochs": 2, "train_subset": 384, "test_subset": 200, "width": 16,
               "batch_size": 64},
    "resources": {"cpu": 1, "gpu": 0}, "max_concurrent_trials": 2,
}
SECOND = {
    "name": "e2e-nqm", "workload": "noisy_quadratic", "optimizers": ["sgd", "ifshampoo"],
    "protocol": {"stages": [3, 2], "top_k": 2, "seed": 2}, "priority": 1,
    "budget": {"epochs": 2, "pace_ms": 400}, "max_concurrent_trials": 1,
}
# the search methods resume too: ASHA's rungs and TPE's sampler after the restart
METHODS = {
    "asha": {"name": "asha", "workload": "noisy_quadratic", "optimizers": ["adamw"],
             "protocol": {"stages": [5, 2], "top_k": 2, "early_stopping": {"kind": "asha"}},
             "budget": {"epochs": 4, "pace_ms": 250}, "max_concurrent_trials": 1},
    "tpe": {"name": "tpe", "workload": "noisy_quadratic", "optimizers": ["adamw"],
            "protocol": {"stages": [5, 3], "top_k": 2, "method": "tpe"},
            "budget": {"epochs": 3, "pace_ms": 250}, "max_concurrent_trials": 1},
}
# One long trial, started before the others: it is mid-way (epoch 2 or later reported and
# checkpointed, far from its end) when the leader dies. The others take ~12 s from its start to
# get mid-study on a fast machine, 1.3-1.9x that on a slow one; 30 one-second epochs leave room
# (it ends ~8 s after them on the fast one). The highest priority: its slot is the first after the
# takeover, not the last of six workers starting at once.
TAKEOVER = {**nqm("takeover", stages=(1,), epochs=30, pace_ms=1000, cap=1, optimizers=("sgd",)), "priority": 2}
RESUMED = re.compile(r"resumed \((\d+) interrupted trials rerun\)")
# A killed controller's lease is taken over once it lapses: 10 s here (30 s by default). Six
# logical CPUs: each study gets a slot at once (fair share gives a free slot to the oldest idle
# study first); the paced noisy-quadratic trials mostly sleep.
SETTINGS = {"lease_ttl_s": 10, "lease_renew_s": 1, "lease_poll_s": 0.5, "num_cpus": 6}


def assert_exact(rows: list[dict], spec: dict, finished=("completed", "diverged")) -> None:
    """One row per (optimizer, stage, index) of the spec's protocol, each in a finished status."""
    for opt in spec["optimizers"]:
        for stage, n in enumerate(spec["protocol"]["stages"], start=1):
            group = [t for t in rows if t["optimizer"] == opt and t["stage"] == stage]
            assert sorted(t["index"] for t in group) == list(range(n)), (spec["name"], opt, stage, group)
            assert all(t["status"] in finished for t in group), (spec["name"], group)


def _ray_auth() -> dict:
    token_file = ray_auth_token_file()
    return {"Authorization": f"Bearer {token_file.read_text().strip()}"} if token_file.exists() else {}


def _dashboard_log(url: str | None, timeout: float = 60) -> str:
    """The study log as the Ray dashboard serves it (its state API reads the runner node's file).
    A local Ray 2.60 turns token authentication on by default, with the token in ~/.ray/auth_token."""
    assert url and "/api/v0/logs/file?" in url, url
    headers = _ray_auth()
    t0 = time.time()
    while True:
        r = api.get(url, headers=headers, timeout=30)
        if r.status_code == 200 or time.time() - t0 > timeout:  # its agent may still be starting
            assert r.status_code == 200, r.text[:500]
            return r.text
        time.sleep(1)


def _role(url: str) -> str:
    return health(url)[1]["runner"]["role"]


def test_a_killed_leader_is_taken_over_and_every_study_resumes_and_completes(db_url, tmp_path):
    pa, pb = free_port(), free_port()
    a_url, url = f"http://127.0.0.1:{pa}", f"http://127.0.0.1:{pb}"
    a = serve(db_url, pa, tmp_path, **SETTINGS)
    b = None
    try:
        wait(lambda: _role(a_url) == "leader", 60, 0.2, "the first controller did not lead")
        # the standby shows the dashboard once it leads (a standby holds no Ray)
        b = serve(db_url, pb, tmp_path, dashboard_port=free_port(), **SETTINGS)
        wait(lambda: _role(url) == "standby", 30, 0.2, "its runner did not try the lease")  # held
        assert _role(a_url) == "leader"
        # a standby serves the API; the leader trains the long trial (its first epoch reported)
        long = api.post(f"{url}/studies", json=TAKEOVER, timeout=30).json()["id"]
        wait_for(url, long, lambda s: any(t["history"] and t["status"] == "running" for t in trials(url, long)))
        sid = api.post(f"{url}/studies", json=SPEC, headers={"Idempotency-Key": "e2e"},
                         timeout=30).json()["id"]
        second = api.post(f"{url}/studies", json=SECOND, timeout=30).json()["id"]
        methods = {k: api.post(f"{url}/studies", json=v, timeout=30).json()["id"] for k, v in METHODS.items()}
        # mid-study, and TPE has seen a result its sampler must find again after the takeover
        wait_for(url, sid, lambda s: finished_trials(s) >= 3 and finished_trials(
            api.get(f"{url}/studies/{methods['tpe']}", timeout=10).json()) >= 2)
        kill(a)  # a real kill: no shutdown hooks run; what it left stays as it was until the takeover
        killed = time.time()
        # the studies run at once: the second has finished trials before the first ends
        assert finished_trials(api.get(f"{url}/studies/{second}").json()) >= 1
        # the long trial is mid-way: epoch 2 or later reported (and checkpointed), not ended
        assert [(t["status"], len(t["history"]) >= 2) for t in trials(url, long)] == [("running", True)]
        wait(lambda: _role(url) == "leader", 60, 0.2, "no takeover within 60 s")
        takeover_s = time.time() - killed
        print(f"takeover after {takeover_s:.1f} s (lease ttl 10 s)")
        assert takeover_s < 10 + 5

        study = wait_for(url, sid, lambda s: s["status"] in ("completed", "failed"))
        other = wait_for(url, second, lambda s: s["status"] in ("completed", "failed"))
        for name, method_sid in methods.items():
            ended = wait_for(url, method_sid, lambda s: s["status"] in ENDED)
            assert ended["status"] == "completed", (name, ended["error"])
            rows = api.get(f"{url}/studies/{method_sid}/trials", params={"limit": 1000}).json()
            assert_exact(rows, METHODS[name], finished=("completed", "stopped", "diverged"))
            assert all(t["config"] for t in rows)  # every TPE trial got its configuration
        long_study = wait_for(url, long, lambda s: s["status"] in ENDED)
        assert long_study["status"] == "completed", long_study["error"]
        assert_every_epoch_once(url, long, TAKEOVER)
        assert_every_epoch_once(url, second, SECOND)
        # every study's trials (with their histories) and log, read once
        every = {name: (trials(url, s), api.get(f"{url}/studies/{s}/logs", params={"tail": 100_000}).text)
                 for name, s in {"takeover": long, "e2e": sid, "e2e-nqm": second, **methods}.items()}
        (spec_trials, logs), other_trials = every["e2e"], every["e2e-nqm"][0]
        dashboard_logs = _dashboard_log(study["dashboard_log_url"])
        jobs = api.get(f"{study['dashboard_url']}/api/jobs/", headers=_ray_auth(), timeout=30).json()
        assert study["status"] == "completed", study.get("error")
        best = api.get(f"{url}/studies/{sid}/best", params={"k": 3}).json()
        export = api.get(f"{url}/studies/{sid}/export", params={"format": "yaml"})
        again = api.post(f"{url}/studies", json=SPEC, headers={"Idempotency-Key": "e2e"})
    finally:
        kill(a)
        if b is not None:
            kill(b)

    # Every study was running when the leader died and resumed under the standby: the trials it
    # interrupted ran twice, every other trial once (never a trial run by both controllers), and no
    # trial has an epoch twice or one missing. A trial that went on from its last checkpoint keeps
    # its earlier rows; the later rows say so.
    went_on = set()
    for name, (rows, log_text) in every.items():
        interrupted = [int(n) for n in RESUMED.findall(log_text)]
        assert interrupted and interrupted[0] >= 1, (name, "was not running when the leader died")
        assert sorted(t["runs"] for t in rows if t["runs"] != 1) == [2] * interrupted[0], (name, rows)
        for t in rows:
            epochs = [h["epoch"] for h in t["history"]]
            assert epochs == list(range(1, len(epochs) + 1)), (name, t["id"], epochs)
            marks = [h.get("resumed_from_epoch") for h in t["history"]]
            if any(marks):
                assert t["runs"] == 2, (name, t)
                k = next(m for m in marks if m)
                assert k >= 1 and all(m is None for m in marks[:k]) and all(m == k for m in marks[k:]), marks
                went_on.add(name)
    assert "takeover" in went_on, "the trial that was mid-way did not go on from its checkpoint"
    assert again.json()["id"] == sid
    assert other["status"] == "completed", other.get("error")
    assert_exact(other_trials, SECOND)
    # the study's log stream: both controllers' runs, every trial's epochs, in the Ray dashboard too
    assert "started on a local Ray" in logs and "interrupted trials rerun) on a local Ray" in logs
    assert logs.rstrip().endswith("study completed")
    for t in spec_trials:
        label = f"{sid[:8]}-{t['optimizer']}-s{t['stage']}-i{t['index']}"
        assert f"trial {label} epoch 1: " in logs, label
    for opt in SPEC["optimizers"]:
        assert f"{opt} stage 2: {SPEC['protocol']['stages'][1]} trials over " in logs
    assert "study completed" in dashboard_logs and f"{sid[:8]}-adamw-s2-i0" in dashboard_logs
    # the runner is a named driver job in the dashboard's Jobs view
    runner_jobs = [j for j in jobs if (j.get("metadata") or {}).get("rootfree") == "study runner"]
    assert runner_jobs and runner_jobs[0]["metadata"]["database"].startswith(db_url.split(":")[0]), jobs
    assert runner_jobs[0]["status"] == "RUNNING"
    # exact protocol counts, one row per (optimizer, stage, index), all finished
    assert_exact(spec_trials, SPEC)
    for t in spec_trials:
        if t["status"] == "completed":
            assert [h["epoch"] for h in t["history"]] == [1, 2]
    # stage 2 lies inside stage 1, or the notes say why it was widened
    for o in study["optimizers"]:
        s1, s2 = o["stage_spaces"]["1"], o["stage_spaces"]["2"]
        for name, p in s2.items():
            if p["kind"] in ("fixed", "choice"):
                continue
            inside = s1[name]["low"] <= p["low"] and p["high"] <= s1[name]["high"]
            widened = any(name in n and "widened" in n for n in study["notes"])
            assert inside or widened, (name, p, s1[name], study["notes"])
        stage2 = [t for t in spec_trials if t["optimizer"] == o["optimizer"] and t["stage"] == 2]
        for t in stage2:
            for name, p in s2.items():
                if p["kind"] not in ("fixed", "choice"):
                    assert p["low"] <= t["config"][name] <= p["high"]
    # best and export agree with the trials table
    for opt in SPEC["optimizers"]:
        done = sorted((t["objective"], t["id"]) for t in spec_trials
                      if t["optimizer"] == opt and t["status"] == "completed")
        assert best[opt][0]["trial_id"] == done[0][1]
        assert math.isclose(best[opt][0]["objective"], done[0][0])
        assert f'optimizers.build("{opt}"' in best[opt][0]["snippet"]
        summary = next(o for o in study["optimizers"] if o["optimizer"] == opt)
        assert summary["best_trial_id"] == done[0][1]
    assert "rfrmsprop" in export.text and "snippet" in export.text
    # the Optuna view of the same database opens
    import optuna

    names = [s.study_name for s in optuna.get_all_study_summaries(
        storage=db_url.replace("postgresql+psycopg", "postgresql+psycopg"))]
    assert "e2e/adamw" in names and "e2e-nqm/sgd" in names  # the live view: one per optimizer
