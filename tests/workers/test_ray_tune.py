"""A real local Ray instance runs several trials with per-epoch reports, survives a diverging
trial, and resumes a trial whose worker process was killed from its checkpoint."""

import os
import signal

import pytest

ray = pytest.importorskip("ray")
from ray.tune import Callback  # noqa: E402

from workers.tune import run_configs  # noqa: E402

BUDGET = {"epochs": 3, "train_subset": 512, "test_subset": 200, "batch_size": 64, "width": 16}


class KillOnce(Callback):
    """SIGKILLs the worker process of trial index 0 after its second epoch, once.

    (By then the first epoch's checkpoint is registered with Tune.)"""

    def __init__(self):
        self.killed = False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.killed and result["meta"]["index"] == 0 and result["epoch"] == 2:
            self.killed = True
            os.kill(result["pid"], signal.SIGKILL)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False,
             ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_tune_run_reports_diverges_and_resumes(local_ray, tmp_path):
    configs = [
        {"workload": "fmnist_vit", "optimizer": opt, "hyperparameters": hp, "budget": BUDGET,
         "seed": 0, "meta": {"index": i}}
        for i, (opt, hp) in enumerate([("adamw", {"lr": 3e-3}), ("sgd", {"lr": 1e8}),
                                       ("rfrmsprop", {"lr": 3e-2}), ("ifshampoo", {"lr": 3e-3})])
    ]
    killer = KillOnce()
    grid = run_configs(configs, name="test", storage_path=str(tmp_path), cpu=1,
                       max_concurrent_trials=2, max_failures=2, callbacks=[killer])
    assert killer.killed
    by_index = {r.metrics["meta"]["index"]: r for r in grid}
    assert set(by_index) == {0, 1, 2, 3}
    assert by_index[1].metrics["status"] == "diverged"
    for i in (0, 2, 3):
        r = by_index[i]
        assert r.error is None and r.metrics["status"] == "completed"
        epochs = [m["epoch"] for m in r.metrics_dataframe.to_dict("records")]
        assert epochs[-1] == 3
    resumed = by_index[0].metrics["resumed_from_epoch"]
    assert resumed in (1, 2), "the killed trial restarted from scratch instead of its checkpoint"
