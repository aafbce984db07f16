"""Issue 30: an exception in a trial's own code is a result (a final `failed` report, no retry);
the machine's trouble (memory, a full disk, Ray) still fails the worker, which Tune retries from
the trial's last checkpoint (ROOTFREE_TRIAL_RETRIES)."""

import errno

import pytest

pytest.importorskip("ray")
import workers.tune as wt  # noqa: E402

CONFIG = {"workload": "noisy_quadratic", "optimizer": "adamw", "budget": {"epochs": 2, "steps": 2}, "seed": 0}


def test_an_exception_in_the_trials_own_code_is_a_failed_report():
    reports = []
    # a real trial whose optimizer refuses its hyperparameters (torch: "Invalid learning rate")
    wt.run_reporting_failures({**CONFIG, "hyperparameters": {"lr": -1.0}},
                              lambda m, s, final: reports.append((m, final)), None)
    (last, final), = [r for r in reports if r[0].get("status") == "failed"]
    assert final and "ValueError" in last["error"] and "learning rate" in last["error"].lower()


def test_a_good_trial_reports_as_before():
    reports = []
    wt.run_reporting_failures({**CONFIG, "hyperparameters": {"lr": 1e-3}},
                              lambda m, s, final: reports.append(m), None)
    assert [r["status"] for r in reports] == ["running", "completed"]


@pytest.mark.parametrize("error", [MemoryError(), OSError(errno.ENOSPC, "No space left on device")])
def test_the_machines_trouble_still_fails_the_worker(monkeypatch, error):
    def run_trial(config, report, resume):
        raise error

    monkeypatch.setattr(wt, "run_trial", run_trial)
    with pytest.raises(type(error)):
        wt.run_reporting_failures(CONFIG, lambda *a: None, None)


def test_an_error_inside_a_report_is_tunes_own():
    def report(metrics, state, final):
        raise RuntimeError("tune's session is gone")

    with pytest.raises(RuntimeError, match="session"):
        wt.run_reporting_failures({**CONFIG, "hyperparameters": {"lr": 1e-3}}, report, None)
