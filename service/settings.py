"""One settings object for every entry point, read from ROOTFREE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOTFREE_", env_file=None)

    database_url: str = "sqlite:///rootfree.db"
    ray_address: str | None = None  # None: start a local Ray; "auto" or "ray://..." for a cluster
    host: str = "127.0.0.1"
    port: int = 8000
    storage_path: str = "runs"  # Ray Tune experiment directories (checkpoints)
    num_cpus: int | None = None  # for a local Ray; None: all cores
    object_store_mb: int = 200
    dashboard: bool = True
    dashboard_port: int = 8265
    poll_interval_s: float = 1.0
    start_runner: bool = True
    runner_process: bool = True  # the runner in a child process (the API stays responsive)
    # Niceness of that child process and of the local Ray it starts (trial workers go further,
    # ROOTFREE_WORKER_NICE): the Tune driver is batch work, the API answers people. 0: leave it.
    runner_nice: int = 5
    num_gpus: int | None = None  # for a local Ray (a logical GPU count: fractional-GPU tests)
    # Who runs next (service/control/scheduler.py): "fair" (priority, then fair share) or "sequential"
    # (one study and one (optimizer, stage) group at a time: the old order, for bench/scheduler.py).
    scheduler: str = "fair"
    cluster_refresh_s: float = 5.0  # how often the runner records the cluster's nodes
    max_trials_per_study: int = 5000  # every stage of every optimizer
    # A trial whose worker dies for a reason outside its own code (Ray's out-of-memory kill, a dead
    # node, a lost actor) runs again from its last checkpoint this many times before it is failed;
    # an exception in its own code fails it at once (issue 30).
    trial_retries: int = Field(default=2, ge=0, le=100)
    max_active_studies: int = 50  # queued + running
    # The runner lease (service/store/lease.py): a standby takes over within lease_ttl_s of the
    # leader's death (a `serve` whose own runner process died releases its lease at once); the
    # leader renews every lease_renew_s and stops its own trials when it has not renewed for
    # lease_ttl_s - 5 s (so no trial runs under two leaders).
    lease_ttl_s: float = 30.0
    lease_renew_s: float = 3.0
    lease_poll_s: float = 2.0  # how often a standby tries to take the lease
    db_retry_s: float = 600.0  # the runner's writes retry through a database outage this long
    max_runner_restarts: int = 5  # consecutive failed restarts before `serve` exits non-zero
    # Checkpoints of finished trials: final (only the last, the default), all, or none.
    keep_checkpoints: Literal["final", "all", "none"] = "final"
    # No trial starts while the storage path has less free space than this (a full disk fails
    # the trials it hits; a study that cannot go on ends, saying why).
    min_free_mb: int = 50
    # How long a client's claim on an external study's trial lasts without a report or a
    # heartbeat (each renews it); a claim that lapses goes back to pending for another client.
    external_lease_s: float = 600.0
    # The live Optuna view (service/followers/optuna_view.py): the runner follows the store into Optuna
    # studies in the same database from its own thread, polling this often. False: no view.
    optuna_view: bool = True
    optuna_view_interval_s: float = 1.0
    optuna_view_url: str | None = None  # where the view is written; None: the study database
    # The view's writes in a child process (no share of the runner's GIL) or a thread of the runner.
    optuna_view_process: bool = True
    # MLflow tracking (service/followers/mlflow_tracker.py, `pip install 'rootfree[mlflow]'`), e.g.
    # sqlite:///mlflow.db: a parent run per study, a nested run per trial. None: off.
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "rootfree"
    # Each trial's Ray actor named "rootfree <study> <optimizer> s<stage> #<trial id>" in the Ray
    # dashboard's Actors view. Ray reads an actor's name once, when it is created, so this costs
    # Tune's actor reuse: a new actor (process start, imports) per trial.
    trial_actor_names: bool = False
    runner_id: str | None = None  # the lease holder id (set by `serve` for its runner process)
    # tokens: every endpoint but /healthz and the OpenAPI pages needs a bearer token (the default);
    # none: no authentication, only for a development server on a loopback address.
    auth: Literal["tokens", "none"] = "tokens"
    # Host names the API answers to (TrustedHostMiddleware); "*" accepts any. Comma-separated
    # in the environment: ROOTFREE_ALLOWED_HOSTS=rootfree.lab.example,127.0.0.1
    allowed_hosts: str = "*"

    @property
    def allowed_host_list(self) -> list[str]:
        return [h.strip() for h in self.allowed_hosts.split(",") if h.strip()] or ["*"]


@lru_cache
def get_settings() -> Settings:
    return Settings()
