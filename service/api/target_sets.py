"""The /target-sets resource: frozen, versioned targets for algoperf suites (service/results/target_sets.py).

A target set is kept as a suite row of kind `TARGET_SET_KIND` (its studies are ordinary studies that carry
its id); once every study has ended its targets are computed once and frozen into it. It never
changes after that: PUT/PATCH answer 405, DELETE 409 while a suite takes its targets from it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.api.auth import Principal, audit, client_address, current_user
from service.api.deps import adopt_cluster_catalog, external_samplers, get_app_settings, get_store
from service.api.errors import ApiError
from service.api.schemas import PlainText, Resources, SuiteSpec, first_error
from service.control import studies as study_cases
from service.control.suites import submit_target_set
from service.domain.spec import TARGET_SET_KIND
from service.domain.statuses import ACTIVE
from service.results.target_sets import refresh, set_status
from service.settings import Settings
from service.store.models import Suite
from service.store.study_store import StudyStore

router = APIRouter(prefix="/target-sets", tags=["target-sets"], dependencies=[Depends(current_user)])


class TargetSetWorkload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    budget: dict[str, int] = Field(default_factory=dict)
    max_runtime_s: int | None = Field(default=None, ge=1, le=10_000_000)


class TargetSetSpec(PlainText):
    """`POST /target-sets`: the baselines tuned on each workload (`trials` Sobol draws each), each
    one's best re-run `reruns` times."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    workloads: list[TargetSetWorkload] = Field(min_length=1, max_length=20)
    optimizers: list[str] = Field(min_length=1, max_length=10)
    trials: int = Field(default=20, ge=1, le=10000)
    reruns: int = Field(default=5, ge=1, le=20)
    search_spaces: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int = Field(default=2, ge=1, le=1024)
    priority: int = Field(default=0, ge=0, le=100)

    def as_suite(self) -> SuiteSpec:
        """The same studies as a suite without a ruleset: one stage of `trials` Sobol draws per
        baseline, then `reruns` seed runs of each one's best."""
        try:
            return SuiteSpec.model_validate({
                "name": self.name, "optimizers": self.optimizers, "baseline": self.optimizers[0],
                "workloads": [w.model_dump(exclude_none=True) for w in self.workloads],
                "protocol": {"stages": [self.trials], "method": "sobol", "seeds": self.reruns, "seed": self.seed},
                "search_spaces": self.search_spaces, "resources": self.resources.model_dump(),
                "max_concurrent_trials": self.max_concurrent_trials, "priority": self.priority})
        except ValidationError as e:
            field, message = first_error(e)
            raise ApiError(422, field or "body", message) from None


def get_target_set_or_404(request: Request, set_id: str = Path(max_length=64),
                          user: Principal = Depends(current_user)) -> Suite:
    ts = get_store(request).get_suite(set_id)
    if ts is None or ts.spec.get("kind") != TARGET_SET_KIND or not user.owns(ts.owner):
        raise HTTPException(404, f"target set {set_id!r} not found")
    return ts


def target_set_out(store: StudyStore, ts: Suite) -> dict:
    spec = refresh(store, ts)
    rows = store.suite_studies(ts.id)
    frozen = spec.get("targets") is not None
    done = frozen and spec.get("final_status") == "completed"
    # ended without every study completing (a failure, a cancel): the targets it has, no version
    status = ("done" if done else spec.get("final_status")) if frozen else set_status(rows)
    return {"id": ts.id, "name": ts.name, "status": status, "owner": ts.owner,
            "created_at": ts.created_at.isoformat(), "version": ts.id if done else None,
            "targets": spec.get("targets"), "detail": spec.get("detail"),
            "studies": [{"id": sid, "workload": w["name"], "status": s.status if s else "deleted"}
                        for sid, s, w in zip(spec["study_ids"], rows, spec["workloads"], strict=True)],
            "spec": {k: spec[k] for k in ("workloads", "optimizers", "trials", "reruns", "seed")},
            "links": {"self": f"/target-sets/{ts.id}"}}


@router.post("", status_code=201, dependencies=[Depends(adopt_cluster_catalog)])
def create_target_set(spec: TargetSetSpec, request: Request, response: Response,
                      idempotency_key: str | None = Header(default=None, max_length=200),
                      store: StudyStore = Depends(get_store), settings: Settings = Depends(get_app_settings),
                      user: Principal = Depends(current_user)):
    suite_spec, study_specs = spec.as_suite().resolved()
    stored = {**suite_spec, "kind": TARGET_SET_KIND, "trials": spec.trials, "reruns": spec.reruns, "seed": spec.seed,
              "targets": None}
    ts, created = submit_target_set(store, settings, stored, study_specs, idempotency_key, user.user,
                                    {"actor": user.user, "client": client_address(request)})
    request.app.state.queue_snapshot = None
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/target-sets/{ts.id}"
    return target_set_out(store, ts)


@router.get("/{set_id}")
def get_target_set(ts: Suite = Depends(get_target_set_or_404), store: StudyStore = Depends(get_store)):
    """Status and, once every study has completed, `{"version": <id>, "targets": {workload: value}}`
    (status "done"); a set whose studies ended otherwise says so (failed, cancelled) and has no version."""
    return target_set_out(store, ts)


@router.put("/{set_id}", status_code=405)
@router.patch("/{set_id}", status_code=405)
def change_target_set(ts: Suite = Depends(get_target_set_or_404)):
    raise ApiError(405, "target_set", "a target set never changes; submit a new one",
                   headers={"Allow": "GET, DELETE"})


@router.delete("/{set_id}", status_code=204)
def delete_target_set(request: Request, ts: Suite = Depends(get_target_set_or_404),
                      store: StudyStore = Depends(get_store), settings: Settings = Depends(get_app_settings),
                      user: Principal = Depends(current_user)):
    users = store.suites_using_targets(ts.id)
    if users:
        raise ApiError(409, "target_set", f"suite(s) {', '.join(users)} take their targets from it")
    studies = [s for s in store.suite_studies(ts.id) if s is not None]
    if any(s.status in ACTIVE for s in studies):
        raise ApiError(409, "status", "its studies are still queued or running; cancel them first")
    store.delete_suite(ts.id)
    audit(store.engine, user.user, "target_set.delete", ts.id, client_address(request),
          {"name": ts.name, "owner": ts.owner})
    for study in studies:  # as DELETE /studies/{id}: audited, their files and views removed
        study_cases.after_delete(store, study, user.user, client_address(request), settings.storage_path,
                                 external_samplers(request.app))
    return Response(status_code=204)


