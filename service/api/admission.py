"""What every submission (a study, a suite, a target set) passes before anything is stored: the
cluster's catalog adopted and checked (does some live node offer the workload and optimizers?),
the trial quota and whether any node could ever run one trial. Each failure is a 422 naming the
field. Not a router: the studies', suites' and target sets' routers call it."""

from __future__ import annotations

from fastapi import Depends

from service.api.deps import get_store
from service.api.errors import ApiError
from service.control.scheduler import infeasible
from service.control.stages import planned_trials
from service.domain import catalog
from service.domain.spec import ResolvedSpec
from service.settings import Settings
from service.store.study_store import StudyStore


def cluster_catalogs(store: StudyStore) -> dict[str, dict] | None:
    """{node id: catalog} of the live nodes the runner recorded, or None (nothing recorded yet)."""
    return catalog.offered(store.cluster())


def adopt_cluster_catalog(store: StudyStore = Depends(get_store)) -> None:
    """Before a study's body is validated: what only the cluster's nodes offer becomes known here."""
    catalog.adopt(cluster_catalogs(store))


def check_cluster_offers(store: StudyStore, spec: ResolvedSpec) -> None:
    """422 naming `workload` or `optimizers` when no live node could run some trial of the study
    (the record of each node's catalog); nothing recorded yet: the controller's own catalog,
    which the spec's validation already applied."""
    problem = catalog.check_offered(cluster_catalogs(store), spec.workload, spec.optimizers)
    if problem is not None:
        raise ApiError(422, *problem)


def check_admission(store: StudyStore, settings: Settings, spec: ResolvedSpec) -> None:
    """The trial quota and feasibility, before anything is stored: 422 naming the field (the
    per-user active-study quota, 429, is counted by the insert itself)."""
    n = planned_trials(spec)
    if n > settings.max_trials_per_study:
        raise ApiError(422, "trials", f"the study plans {n} trials (stages x optimizers); the limit is "
                                       f"{settings.max_trials_per_study} (ROOTFREE_MAX_TRIALS_PER_STUDY)")
    nodes = [node["resources"] for node in store.cluster().get("nodes", []) if node.get("alive")]
    # An external study's trials run on the clients' machines, not on this cluster.
    short = None if spec.external else infeasible(spec.resources.ray_request(), nodes)
    if short is not None:
        field = {"CPU": "cpu", "GPU": "gpu", "memory": "memory_mb"}.get(short, short)
        biggest = max(node.get(short, 0.0) for node in nodes)
        if short == "memory":
            biggest /= 2**20
        raise ApiError(422, f"resources.{field}", f"no live node of the cluster could ever run one trial: "
                                                   f"it asks for {getattr(spec.resources, field)} {field}, the largest "
                                                   f"node has {biggest:g}")
