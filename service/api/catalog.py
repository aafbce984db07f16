"""What can be tuned: workloads, and optimizers with their default spaces.

The lists are what the cluster offers: the union of the live nodes' catalogs as the runner
recorded them, or this controller's own before anything is recorded. Plugins that were refused
(failed to import, broke the contract, clashed with a built-in name) are counted in the
``X-Plugin-Errors`` header of every answer and listed with ``?include=errors``, which answers
``{"items": [...], "errors": [...]}``: the bare list stays the default so existing clients keep
working (a list has no room for a new field)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Response

from service.api.auth import current_user
from service.api.deps import get_store
from service.api.errors import ApiError
from service.control import catalog
from service.domain.spec import ResolvedSpec
from service.store.study_store import StudyStore

router = APIRouter(tags=["catalog"], dependencies=[Depends(current_user)])
ERRORS_HEADER = "X-Plugin-Errors"


def cluster_catalogs(store: StudyStore) -> dict[str, dict] | None:
    """{node id: catalog} of the live nodes the runner recorded, or None (nothing recorded yet)."""
    return catalog.offered(store.cluster())


def _view(store: StudyStore, kind: str) -> tuple[list[dict], list[dict]]:
    own = catalog.local()
    nodes = cluster_catalogs(store)
    items = catalog.union(nodes, kind) if nodes else own[kind]
    merged: dict[tuple, dict] = {}
    for where, errors in [("controller", own["errors"])] + [(nid, c.get("errors") or []) for nid, c in
                                                           (nodes or {}).items()]:
        for e in errors:
            if e.get("kind") != kind[:-1]:
                continue
            entry = merged.setdefault((e["name"], e["error"]), {**e, "where": []})
            entry["where"].append(where)
    return [{k: v for k, v in info.items() if k != "zero_ok"} for info in items.values()], list(merged.values())


def _answer(response: Response, store: StudyStore, kind: str, include: str | None):
    items, errors = _view(store, kind)
    response.headers[ERRORS_HEADER] = str(len(errors))
    return {"items": items, "errors": errors} if include == "errors" else items


@router.get("/workloads")
def list_workloads(response: Response, include: Literal["errors"] | None = Query(None),
                   store: StudyStore = Depends(get_store)):
    return _answer(response, store, "workloads", include)


@router.get("/optimizers")
def list_optimizers(response: Response, include: Literal["errors"] | None = Query(None),
                    store: StudyStore = Depends(get_store)):
    return _answer(response, store, "optimizers", include)


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
