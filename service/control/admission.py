"""What every submission (a study, a suite, a target set) passes before anything is stored: the
cluster's catalog adopted and checked (does some live node offer the workload and optimizers?),
the trial quota and whether any node could ever run one trial. Each failure is `InvalidField`
naming the field (the api's 422). The submissions' use-cases (service/control/studies.py,
suites.py) call it; the api adopts the catalog before it validates a body."""

from __future__ import annotations

from service.control.scheduler import infeasible
from service.control.stages import planned_trials
from service.domain import catalog
from service.domain.refusals import InvalidField
from service.domain.spec import ResolvedSpec
from service.settings import Settings
from service.store.interface import Store


def cluster_catalogs(store: Store) -> dict[str, dict] | None:
    """{node id: catalog} of the live nodes the runner recorded, or None (nothing recorded yet)."""
    return catalog.offered(store.cluster())


def adopt_cluster_catalog(store: Store) -> None:
    """Before a study's body is validated: what only the cluster's nodes offer becomes known here."""
    catalog.adopt(cluster_catalogs(store))


def check_cluster_offers(cluster: dict, spec: ResolvedSpec) -> None:
    """`InvalidField` naming `workload` or `optimizers` when no live node could run some trial of
    the study (the record of each node's catalog); nothing recorded yet: the controller's own
    catalog, which the spec's validation already applied."""
    problem = catalog.check_offered(catalog.offered(cluster), spec.workload, spec.optimizers)
    if problem is not None:
        raise InvalidField(*problem)


def check_admission(cluster: dict, settings: Settings, spec: ResolvedSpec) -> None:
    """The trial quota and feasibility, before anything is stored: `InvalidField` naming the field
    (the per-user active-study quota, 429, is counted by the insert itself)."""
    n = planned_trials(spec)
    if n > settings.max_trials_per_study:
        raise InvalidField("trials", f"the study plans {n} trials (stages x optimizers); the limit is "
                                     f"{settings.max_trials_per_study} (ROOTFREE_MAX_TRIALS_PER_STUDY)")
    nodes = [node["resources"] for node in cluster.get("nodes", []) if node.get("alive")]
    # An external study's trials run on the clients' machines, not on this cluster.
    short = None if spec.external else infeasible(spec.resources.ray_request(), nodes)
    if short is not None:
        field = {"CPU": "cpu", "GPU": "gpu", "memory": "memory_mb"}.get(short, short)
        biggest = max(node.get(short, 0.0) for node in nodes)
        if short == "memory":
            biggest /= 2**20
        raise InvalidField(f"resources.{field}", f"no live node of the cluster could ever run one trial: "
                                                 f"it asks for {getattr(spec.resources, field)} {field}, the largest "
                                                 f"node has {biggest:g}")


def admit(store: Store, settings: Settings, spec: ResolvedSpec) -> None:
    """Both checks, in the order every submission runs them, on one read of the cluster's record."""
    cluster = store.cluster()
    check_cluster_offers(cluster, spec)  # the cluster decides which workloads/optimizers exist
    check_admission(cluster, settings, spec)
