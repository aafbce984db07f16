"""The /suites resource: one submission over several workloads, one ordinary study per entry."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from service.api.auth import Principal, client_address, current_user
from service.api.deps import adopt_cluster_catalog, get_app_settings, get_store
from service.api.errors import ApiError
from service.api.results import render_lock, results
from service.api.schemas import SuiteOut, SuiteSpec, SuiteStudy
from service.control.suites import submit_suite
from service.domain.ruleset import protocol_version
from service.domain.spec import TARGET_SET_KIND
from service.results.algoperf_export import algoperf_zip
from service.results.algoperf_report import algoperf_suite_report
from service.results.feasibility import spec_warnings
from service.results.report.algoperf import render_algoperf_report
from service.results.report.suite import render_suite_report
from service.results.suites import jsonable, suite_report, suite_status
from service.results.target_sets import TargetsUnavailable, suite_targets
from service.settings import Settings
from service.store.models import Suite
from service.store.study_store import StudyStore

router = APIRouter(prefix="/suites", tags=["suites"], dependencies=[Depends(current_user)])


def get_suite_or_404(request: Request, suite_id: str = Path(max_length=64),
                     user: Principal = Depends(current_user)) -> Suite:
    """The suite, if the caller may see it (its owner or an admin); another user's answers like a
    missing one."""
    suite = get_store(request).get_suite(suite_id)
    if suite is None or not user.owns(suite.owner) or suite.spec.get("kind") == TARGET_SET_KIND:
        raise HTTPException(404, f"suite {suite_id!r} not found")
    return suite


def suite_out(store: StudyStore, suite: Suite) -> SuiteOut:
    studies = store.suite_studies(suite.id)
    entries = suite.spec["workloads"]
    return SuiteOut(
        id=suite.id, name=suite.name, status=suite_status([s.status for s in studies if s is not None]),
        owner=suite.owner, spec=suite.spec, created_at=suite.created_at,
        protocol_version=suite.spec.get("protocol_version") or protocol_version(suite.spec.get("ruleset")),
        studies=[SuiteStudy(id=sid, name=s.name if s else "(deleted)", workload=w["name"], budget=w["budget"],
                            target=w.get("target"), status=s.status if s else "deleted")
                 for sid, s, w in zip(suite.spec["study_ids"], studies, entries, strict=True)],
        links={"self": f"/suites/{suite.id}", "report": f"/suites/{suite.id}/report",
               **({"export": f"/suites/{suite.id}/export?format=algoperf"} if suite.spec.get("ruleset") else {})},
        warnings=spec_warnings(suite.spec))


@router.post("", status_code=201, response_model=SuiteOut, dependencies=[Depends(adopt_cluster_catalog)])
def create_suite(spec: SuiteSpec, request: Request, response: Response,
                 idempotency_key: str | None = Header(default=None, max_length=200),
                 store: StudyStore = Depends(get_store), settings: Settings = Depends(get_app_settings),
                 user: Principal = Depends(current_user)):
    if spec.targets is not None:
        spec = with_target_set(store, user, spec)
    suite_spec, study_specs = spec.resolved()
    suite, created = submit_suite(store, settings, suite_spec, study_specs, idempotency_key, user.user,
                                  {"actor": user.user, "client": client_address(request)})
    request.app.state.queue_snapshot = None  # the queue changed
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/suites/{suite.id}"
    return suite_out(store, suite)


def with_target_set(store: StudyStore, user: Principal, spec: SuiteSpec) -> SuiteSpec:
    """The suite with each workload's target taken from its (done) target set."""
    for i, w in enumerate(spec.workloads):
        if w.target is not None:
            raise ApiError(422, f"workloads[{i}].target", "the targets come from the target set; give none here")
    body = spec.model_dump(exclude_unset=True)
    try:
        values = suite_targets(store, user.owns, spec.targets, body["workloads"])
    except TargetsUnavailable as e:
        raise ApiError(422, "targets", str(e)) from None
    body["workloads"] = [{**w, "target": v} for w, v in zip(body["workloads"], values, strict=True)]
    return SuiteSpec.model_validate(body)


@router.get("/{suite_id}", response_model=SuiteOut)
def get_suite(suite: Suite = Depends(get_suite_or_404), store: StudyStore = Depends(get_store)):
    return suite_out(store, suite)


def _study_dicts(store: StudyStore, suite: Suite) -> list[dict]:
    rows = store.suite_studies(suite.id)
    return [{"id": s.id, "name": s.name, "status": s.status, "spec": s.resolved,
             "trials": store.trial_dicts(s.id)}
            if s is not None else {"id": sid, "name": "(deleted)", "status": "deleted", "spec": None, "trials": []}
            for sid, s in zip(suite.spec["study_ids"], rows, strict=True)]


@router.get("/{suite_id}/export", response_class=Response,
            responses={200: {"content": {"application/zip": {}}}})
def export(request: Request, format: Literal["algoperf"] = "algoperf",  # noqa: A002
           suite: Suite = Depends(get_suite_or_404), store: StudyStore = Depends(get_store)):
    """A suite run under the algoperf ruleset in AlgoPerf's log layout (a zip):
    `<optimizer>/study_<j>/<workload>/trial_<i>/eval_measurements.csv` and `meta_data.json` per
    trial, `suite.json` with the protocol version and targets (service/results/algoperf_export.py)."""
    if not suite.spec.get("ruleset"):
        raise ApiError(409, "format", "the suite was not run under the algoperf ruleset; its trials are not "
                                      "AlgoPerf's studies (GET /suites/{id}/report gives its results)")
    # every trial's history, zipped: once per state of the suite's studies (as the report), not per request
    fingerprints = tuple(store.fingerprint(s.id) if s is not None else None for s in store.suite_studies(suite.id))
    data = results(request).get(("suite.zip", suite.id, fingerprints),
                                lambda: algoperf_zip(suite.id, suite.spec, _study_dicts(store, suite)),
                                tag=("suite.zip", suite.id))
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="suite-{suite.id}-algoperf.zip"'})


@router.get("/{suite_id}/report", response_class=HTMLResponse)
def report(request: Request, format: Literal["html", "json"] = "html",  # noqa: A002
           suite: Suite = Depends(get_suite_or_404), store: StudyStore = Depends(get_store)):
    """Per workload the verdict table; across workloads time to target, the performance profile,
    the AlgoPerf-style score, the speed-up over the baseline and the tuning cost (service/results/suites.py).
    `format=json`: the numbers (an infinite time, a miss, is null)."""
    rows = store.suite_studies(suite.id)
    fingerprints = tuple(store.fingerprint(s.id) if s is not None else None for s in rows)

    def compute() -> dict:
        studies = [{"id": s.id, "name": s.name, "status": s.status, "spec": s.resolved,
                    "trials": store.trial_dicts(s.id)}
                   if s is not None else {"id": sid, "name": "(deleted)", "status": "deleted", "spec": None,
                                          "trials": []}
                   for sid, s in zip(suite.spec["study_ids"], rows, strict=True)]
        ruled = suite.spec.get("ruleset")
        data = (algoperf_suite_report if ruled else suite_report)(suite.spec, studies)
        data["protocol_version"] = suite.spec.get("protocol_version") or protocol_version(ruled)
        data["status"] = suite_status([s["status"] for s in studies if s["status"] != "deleted"])
        data["id"] = suite.id
        return data

    # Computed once per state of its studies (the cache of the studies' own results), and drawn
    # under the same lock as every other report: pyplot's global state is not thread-safe.
    data = results(request).get(("suite", suite.id, fingerprints), compute, tag=("suite", suite.id))
    if format == "json":
        return JSONResponse(jsonable(data))

    def render() -> str:
        with render_lock:
            return (render_algoperf_report if data.get("ruleset") else render_suite_report)(data)

    return HTMLResponse(results(request).get(("suite.html", suite.id, fingerprints), render,
                                             tag=("suite.html", suite.id)))
