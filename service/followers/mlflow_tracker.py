"""MLflow tracking of studies, optional (``ROOTFREE_MLFLOW_TRACKING_URI``, e.g. ``sqlite:///mlflow.db``;
``pip install 'rootfree[mlflow]'``): one parent run per study (the spec as params and tags), one
nested run per trial (its hyperparameters as params, every per-epoch metric with the epoch as its
step, status/seed/stage tags, the final checkpoint path).

Written from the store by a follower thread of the runner process, never from inside trial
processes, so MLflow sees exactly what the store holds; an MLflow outage or misconfiguration is
logged and retried and never touches a study. Idempotent: every run carries its rootfree ids as
tags, so a restarted runner continues the same runs.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC
from typing import Any

from service.domain.statuses import ACTIVE, FINISHED
from service.followers.base import Follower
from service.store.interface import Store
from service.store.models import Study

log = logging.getLogger("rootfree.mlflow")

STUDY_TAG, TRIAL_TAG, KIND_TAG = "rootfree.study_id", "rootfree.trial_id", "rootfree.kind"
RUN_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "diverged": "FAILED", "failed": "FAILED"}
STUDY_STATUS = {"completed": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


def _flat(prefix: str, d: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (d or {}).items():
        out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, dict | list) else str(v)
    return out


class MlflowTracker:
    def __init__(self, store: Store, tracking_uri: str, experiment: str = "rootfree"):
        from mlflow.tracking import MlflowClient

        self.store = store
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_name = experiment
        self._experiment_id: str | None = None
        self._parents: dict[str, str] = {}  # study id -> parent run id
        self._runs: dict[int, list] = {}  # trial id -> [run id, epochs logged, finished]
        self._done: set[str] = set()  # studies whose parent run is terminated

    def forget(self) -> None:
        self._experiment_id = None
        self._parents.clear()
        self._runs.clear()
        self._done.clear()

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            e = self.client.get_experiment_by_name(self.experiment_name)
            self._experiment_id = e.experiment_id if e else self.client.create_experiment(self.experiment_name)
        return self._experiment_id

    def _load(self, study: Study) -> None:
        """The study's runs from a previous runner (or a previous pass that failed half-way)."""
        if study.id in self._parents:
            return
        runs = self.client.search_runs([self.experiment_id], f"tags.`{STUDY_TAG}` = '{study.id}'",
                                       max_results=50000)
        for r in runs:
            tags = r.data.tags
            if tags.get(KIND_TAG) == "study":
                self._parents[study.id] = r.info.run_id
                if r.info.status != "RUNNING":
                    self._done.add(study.id)
            elif TRIAL_TAG in tags:
                finished = r.info.status != "RUNNING"
                logged = 0 if finished else max((m.step for m in self.client.get_metric_history(
                    r.info.run_id, "epoch")), default=0)
                self._runs[int(tags[TRIAL_TAG])] = [r.info.run_id, logged, finished]
        if study.id not in self._parents:
            spec = study.resolved
            params = {"workload": spec.workload, "metric": spec.metric, "mode": spec.mode,
                      "optimizers": ",".join(spec.optimizers),
                      **_flat("protocol.", spec.protocol.model_dump(mode="json")),
                      **_flat("budget.", dict(spec.budget))}
            run = self.client.create_run(self.experiment_id, run_name=study.name, tags={
                STUDY_TAG: study.id, KIND_TAG: "study", "rootfree.study_name": study.name,
                "rootfree.search_spaces": json.dumps(spec.search_spaces)[:7900]})
            self._log_params(run.info.run_id, params)
            self._parents[study.id] = run.info.run_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def sync_study(self, study: Study) -> int:
        """Writes what changed since the last pass; returns the trials it touched."""
        from mlflow.entities import Metric

        self._load(study)
        rows = self.store.trial_progress(study.id)
        stale = [tid for tid, status, epochs in rows
                 if tid not in self._runs or (not self._runs[tid][2]
                                              and (epochs > self._runs[tid][1] or status in FINISHED))]
        trials = self.store.trials_by_id(stale)
        histories = self.store.histories([t.id for t in trials])
        parent = self._parents[study.id]
        for t in trials:
            if t.id not in self._runs:
                run = self.client.create_run(self.experiment_id, run_name=f"{t.optimizer} s{t.stage} #{t.id}", tags={
                    "mlflow.parentRunId": parent, STUDY_TAG: study.id, TRIAL_TAG: str(t.id),
                    "optimizer": t.optimizer, "stage": str(t.stage), "index": str(t.index), "seed": str(t.seed),
                    "status": t.status})
                self._log_params(run.info.run_id, {**(t.config or {}), "optimizer": t.optimizer})
                self._runs[t.id] = [run.info.run_id, 0, False]
            mirror = self._runs[t.id]
            run_id, logged = mirror[0], mirror[1]
            now_ms = int(time.time() * 1000)
            metrics = []
            for row in histories[t.id]:
                epoch = int(row.get("epoch") or 0)
                if epoch <= logged:
                    continue
                for k, v in row.items():
                    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                        metrics.append(Metric(k, float(v), now_ms, epoch))
                logged = max(logged, epoch)
            for i in range(0, len(metrics), 500):
                self.client.log_batch(run_id, metrics=metrics[i:i + 500])
            mirror[1] = logged
            if t.status in FINISHED:
                self.client.set_tag(run_id, "status", t.status)
                if t.checkpoint:
                    self.client.set_tag(run_id, "checkpoint", t.checkpoint)
                if t.error:
                    self.client.set_tag(run_id, "reason", t.error[:5000])
                end = t.finished_at.replace(tzinfo=t.finished_at.tzinfo or UTC) if t.finished_at else None
                self.client.set_terminated(run_id, RUN_STATUS[t.status],
                                           int(end.timestamp() * 1000) if end else None)
                mirror[2] = True
        if study.status in STUDY_STATUS and study.id not in self._done:
            self.client.set_terminated(parent, STUDY_STATUS[study.status])
            self._done.add(study.id)
        return len(trials)


class MlflowFollower(Follower):
    """One daemon thread: follows the store's active studies into MLflow (see the module docstring)."""

    thread_name = "rootfree-mlflow"
    what = "mlflow"
    max_delay_s = 60.0
    log = log

    def __init__(self, store: Store, tracking_uri: str, interval_s: float = 2.0, experiment: str = "rootfree"):
        super().__init__(interval_s)
        self.store, self.uri, self.experiment = store, tracking_uri, experiment
        self.tracker: MlflowTracker | None = None
        self._watch: set[str] | None = None

    def recover(self) -> None:  # MLflow is down or misconfigured: the study goes on
        if self.tracker is not None:
            self.tracker.forget()

    def poll(self) -> None:
        if self.tracker is None:
            self.tracker = MlflowTracker(self.store, self.uri, self.experiment)
        if self._watch is None:  # start: what ran lately too (a controller restart)
            self._watch = self.store.watched_study_ids()
        active = {st.id: st for st in self.store.studies_with_status(*ACTIVE)}
        for sid in self._watch | set(active):
            study = active.get(sid) or self.store.get_study(sid)
            if study is None:
                self._watch.discard(sid)
                continue
            self.tracker.sync_study(study)
            if study.status in ACTIVE:
                self._watch.add(sid)
            else:
                self._watch.discard(sid)
