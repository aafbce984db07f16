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
from service.control.admission import cluster_catalogs
from service.domain import catalog
from service.store.study_store import StudyStore

router = APIRouter(tags=["catalog"], dependencies=[Depends(current_user)])
ERRORS_HEADER = "X-Plugin-Errors"


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
