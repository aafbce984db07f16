"""The study runner on a real local Ray (2 CPUs) with the noisy-quadratic workload, for the slow
end-to-end tests of the runner and the scheduler: the module's local Ray, a started runner on a
fresh SQLite store, submitting a study, waiting for a condition. Ray and the runner are imported
on use: collecting the fast tests never pays for them."""

from __future__ import annotations

import time

import pytest

ENDED = ("completed", "failed", "cancelled")  # a study's end


def ray_runner_fixtures(namespace: str, num_gpus: int = 0):
    """Two fixtures for a test module: `local_ray` (module-scoped, autouse: a local Ray of 2 CPUs
    and `num_gpus` logical GPUs) and `harness` ((store, runner): a started `StudyRunner` on a
    fresh SQLite store, stopped afterwards). Use:
    ``local_ray, harness = ray_runner_fixtures("rootfree-test")``."""

    @pytest.fixture(scope="module", autouse=True)
    def local_ray():
        import ray

        ray.init(num_cpus=2, num_gpus=num_gpus, object_store_memory=100 * 2**20, include_dashboard=False,
                 log_to_driver=False, namespace=namespace)
        yield
        ray.shutdown()

    @pytest.fixture
    def harness(tmp_path):
        from service.control.runner import StudyRunner
        from service.settings import Settings
        from service.store.study_store import StudyStore

        store = StudyStore(f"sqlite:///{tmp_path / 'studies.db'}")
        runner = StudyRunner(store, Settings(database_url=store.url, storage_path=str(tmp_path / "runs"),
                                             poll_interval_s=0.2, cluster_refresh_s=0.5))
        runner.start()
        yield store, runner
        runner.stop()

    return local_ray, harness


def submit(store, name, optimizers=("sgd",), stages=(4,), priority=0, cap=2, pace_ms=300,
           resources=None, epochs=2) -> str:
    """Admits a noisy-quadratic study straight into the store; its id."""
    from service.api.schemas import StudySpec

    spec = StudySpec(name=name, workload="noisy_quadratic", optimizers=list(optimizers),
                     protocol={"stages": list(stages), "top_k": 2},
                     budget={"epochs": epochs, "pace_ms": pace_ms}, max_concurrent_trials=cap,
                     priority=priority, resources=resources or {"cpu": 1, "gpu": 0}).resolved()
    return store.create_study(spec, None)[0].id


def wait(cond, timeout: float = 180, every: float = 0.1, what: str = "timed out") -> None:
    """Until `cond()` holds; AssertionError(`what`) after `timeout` seconds."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(what)


def ended(store, *sids) -> bool:
    return all(store.get_study(s).status in ENDED for s in sids)


def spans(store, *sids) -> list[tuple]:
    """(started_at, finished_at) of every trial of the studies."""
    return [(t.started_at, t.finished_at) for sid in sids for t in store.trials(sid)]


def max_concurrency(intervals) -> int:
    """The most (start, end) intervals that overlap at one moment."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best
