"""Per-study Ray metrics (``ray.util.metrics``), exported by the runner's store follower
(service/followers/optuna_view.py) so the Ray dashboard's Metrics view and Prometheus/Grafana
(docker/grafana/rootfree-studies.json) show a study's progress:

- ``rootfree_study_trials{study, study_id, optimizer, status}``: trials by status;
- ``rootfree_study_epochs_reported{study, study_id, optimizer}``: per-epoch reports so far;
- ``rootfree_study_best_objective{study, study_id, optimizer, metric}``: the best objective so far.

They are gauges set from the store (what the store holds is the truth, also after a restart).
"""

from __future__ import annotations

from service.domain.statuses import TRIAL_STATUSES as STATUSES
from service.store.models import Study
from service.store.study_store import StudyStore


class RayStudyMetrics:
    def __init__(self, store: StudyStore):
        from ray.util.metrics import Gauge

        self.store = store
        self.trials = Gauge("rootfree_study_trials", "Trials of a study by optimizer and status",
                            tag_keys=("study", "study_id", "optimizer", "status"))
        self.epochs = Gauge("rootfree_study_epochs_reported", "Per-epoch reports of a study's trials",
                            tag_keys=("study", "study_id", "optimizer"))
        self.best = Gauge("rootfree_study_best_objective", "The best objective so far per optimizer",
                          tag_keys=("study", "study_id", "optimizer", "metric"))

    def update(self, study: Study) -> None:
        """Sets the study's gauges from the store (two grouped queries)."""
        counts, best = self.store.optimizer_gauges(study.id, study.resolved.mode)
        by: dict[tuple[str, str], int] = {}
        epochs: dict[str, int] = {}
        for opt, status, n, e in counts:
            by[(opt, status)] = n
            epochs[opt] = epochs.get(opt, 0) + int(e or 0)
        for opt in study.resolved.optimizers:
            tags = {"study": study.name, "study_id": study.id, "optimizer": opt}
            for status in STATUSES:
                self.trials.set(by.get((opt, status), 0), tags={**tags, "status": status})
            self.epochs.set(epochs.get(opt, 0), tags=tags)
            if best.get(opt) is not None:
                self.best.set(best[opt], tags={**tags, "metric": study.resolved.metric})


def ray_study_metrics(store: StudyStore) -> RayStudyMetrics | None:
    """The exporter when this process is connected to Ray, else None."""
    try:
        import ray

        return RayStudyMetrics(store) if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - metrics are a convenience
        return None
