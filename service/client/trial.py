"""One claimed trial of an external study, as a script trains it: its hyperparameters and budget,
its reports (each renews the claim), its end (a `with` block completes it or fails it with the
user's exception), and a heartbeat thread for long epochs."""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from types import TracebackType
from typing import Any, Protocol

import httpx

from service.client.errors import ClientError
from service.domain.statuses import FINISHED as TRIAL_FINISHED


class Poster(Protocol):
    """What a trial needs of its client: one POST (`Client.post`: retried where it is idempotent)."""

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any: ...


class Trial:
    """One claimed trial of an external study. Its `with` block ends it: completed (or
    stopped/diverged, when a report said so), failed with the exception's last line when the
    block raises."""

    def __init__(self, client: Poster, study_id: str, claim: dict[str, Any]):
        self.client, self.study_id, self.claim = client, study_id, claim
        self.id: int = claim["trial_id"]
        self.optimizer: str = claim["optimizer"]
        self.stage: int = claim["stage"]
        self.seed: int = claim["seed"]
        self.budget: dict[str, Any] = claim["budget"]
        self.hyperparameters: dict[str, Any] = claim["hyperparameters"]
        self.workload: str = claim["workload"]
        self.schedule: str = claim["schedule"]
        self.metric: str = claim["metric"]
        self.mode: str = claim["mode"]
        self.claim_token: str = claim["claim_token"]
        self.lease_expires_at: str = claim["lease_expires_at"]
        self.should_stop = False
        self.reason: str | None = None
        self.diverged = False
        self.status: str | None = None  # set once it has ended
        self._started = self._last = time.perf_counter()

    def __repr__(self) -> str:
        return f"Trial({self.id}, {self.optimizer!r}, stage {self.stage}, {self.hyperparameters})"

    @property
    def _url(self) -> str:
        return f"/studies/{self.study_id}/trials/{self.id}"

    def build_optimizer(self, params, **overrides: Any):
        """`optimizers.build(optimizer, params, **hyperparameters)`, with what the service's own
        workers add: the batch size B of the root-free methods (from the budget) and float32
        IF-Shampoo factors off GPU. `overrides` win."""
        import torch

        import optimizers
        from workers.trial import optimizer_kwargs

        params = list(params)
        first = params[0]["params"][0] if params and isinstance(params[0], dict) else (params[0] if params else None)
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
        kw = optimizer_kwargs(self.optimizer, self.hyperparameters, int(self.budget.get("batch_size", 1)), device)
        return optimizers.build(self.optimizer, params, **{**kw, **overrides})

    def report(self, epoch: int, **metrics: float) -> bool:
        """Reports one epoch (the study's metric among `metrics`); True: go on, False: stop
        (ASHA stopped it at its rung, it diverged, or it has ended). A non-finite value is not
        sent: the trial ends as diverged. epoch_time_s, wall_time_s and peak_memory_mb are added
        unless given (the analysis' time per epoch and memory, as for the service's own trials)."""
        now = time.perf_counter()
        metrics.setdefault("epoch_time_s", now - self._last)
        metrics.setdefault("wall_time_s", now - self._started)
        metrics.setdefault("peak_memory_mb", _peak_memory_mb())
        self._last = now
        values = {k: float(v) for k, v in metrics.items()}
        if not all(math.isfinite(v) for v in values.values()):
            bad = sorted(k for k, v in values.items() if not math.isfinite(v))
            self.diverged, self.should_stop = True, True
            self.reason = f"diverged: {', '.join(bad)} not finite at epoch {epoch}"
            return False
        answer = self.client.post(f"{self._url}/reports",
                                  {"claim_token": self.claim_token, "epoch": epoch, "metrics": values})
        self.should_stop, self.reason = bool(answer["should_stop"]), answer.get("reason")
        return not self.should_stop

    def complete(self, status: str | None = None, **metrics: float) -> str:
        """Ends the trial (default: completed; stopped after a stop, diverged after a non-finite
        report); returns the status the service records."""
        if status is None and self.should_stop and not self.diverged:
            # the service ended the trial when it answered should_stop (ASHA, a divergence, the
            # study's end): its status stands (completing it as another status is a 409)
            recorded = self.client.get(self._url)["status"]
            if recorded in TRIAL_FINISHED:
                self.status = recorded
                return recorded
        status = status or ("diverged" if self.diverged else "stopped" if self.should_stop else "completed")
        body: dict[str, Any] = {"claim_token": self.claim_token, "status": status}
        if metrics:
            body["metrics"] = {k: float(v) for k, v in metrics.items()}
        self.status = self.client.post(f"{self._url}/complete", body)["status"]
        return self.status

    def heartbeat(self) -> bool:
        """Renews the claim's lease without a report; False once the trial has ended."""
        answer = self.client.post(f"{self._url}/heartbeat", {"claim_token": self.claim_token})
        return answer["lease_expires_at"] is not None

    def keep_alive(self) -> Heartbeat:
        """A background thread that renews the lease while this process lives (an epoch may
        outlast the lease); stop it with `.stop()`. The `with` block runs one."""
        return Heartbeat(self)

    def fail(self, reason: str) -> str:
        self.status = self.client.post(f"{self._url}/fail", {"claim_token": self.claim_token,
                                                             "reason": reason[-2000:] or "failed"})["status"]
        return self.status

    def __enter__(self) -> Trial:
        self._heartbeat = self.keep_alive()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        heartbeat = getattr(self, "_heartbeat", None)
        if heartbeat is not None:
            heartbeat.stop()
        if self.status is not None:
            return  # ended inside the block
        if exc is None:
            self.complete()
            return
        # The user's exception is what the caller sees: a failure to record it (the service
        # unreachable, the claim lost) must not replace it (issue 30).
        reason = ("interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt)
                  else traceback.format_exception_only(exc_type, exc)[-1].strip())
        try:
            self.fail(reason)
        except (ClientError, httpx.HTTPError) as e:
            print(f"rootfree: could not record trial {self.id} as failed ({e})", file=sys.stderr)


class Heartbeat:
    """Renews a trial's claim every third of its lease until stopped, the trial ends, or the
    claim is lost (a network error is retried at the next beat)."""

    def __init__(self, trial: Trial):
        from datetime import UTC, datetime

        self.trial = trial
        try:
            expires = datetime.fromisoformat(trial.lease_expires_at)
            lease_s = (expires - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            lease_s = 600.0
        self.interval = max(0.5, lease_s / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rootfree-heartbeat-{trial.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.trial.heartbeat():
                    return
            except ClientError:
                return  # the claim is gone (409) or the study is: nothing left to keep alive
            except httpx.HTTPError:
                continue

    def stop(self) -> None:
        self._stop.set()


def _peak_memory_mb() -> float:
    """What the service's own workers report: the GPU's peak allocation when torch uses one, else
    this process's peak resident memory."""
    torch = sys.modules.get("torch")  # never imported here only for this
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
