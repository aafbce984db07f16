"""The analysis and the report of studies, cached per study until it changes and computed once
at a time (service.results_cache): `/studies/{id}/analysis`, `/studies/{id}/report`, `/report`."""

from __future__ import annotations

import math
import threading

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from service.results.cache import ResultCache
from service.results.report import render_report
from service.results.study_results import study_results
from service.results.summary import study_analysis
from service.store.models import Study
from service.store.study_store import StudyStore

_create = threading.Lock()
# pyplot keeps global state (the current figure): two pages drawn at once in the threadpool would
# draw into each other's figures. One at a time, which also keeps reports to one core.
render_lock = _render = threading.Lock()


def results(request: Request) -> ResultCache:
    cache = getattr(request.app.state, "results", None)
    if cache is None:
        with _create:
            cache = getattr(request.app.state, "results", None)
            if cache is None:
                cache = request.app.state.results = ResultCache()
    return cache


def cached_analysis(request: Request, store: StudyStore, study: Study, target: float | None = None,
                    fingerprint: tuple | None = None) -> dict:
    fingerprint = fingerprint or store.fingerprint(study.id)
    # The study as of the fingerprint or later (the row the dependency loaded may be older).
    return results(request).get(("analysis", target, fingerprint),
                                lambda: study_analysis(store, store.get_study(study.id) or study, target),
                                tag=("analysis", study.id))  # one target per study: many targets never flush the rest


def _finite(x):
    """JSON has no inf or NaN: they become null (as pydantic writes them)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _encode(body: dict) -> bytes:
    # The analysis is plain JSON data: json.dumps directly (jsonable_encoder walks it at 8x the
    # cost: 2.3 s at 10,000 trials); the encoder only for anything else.
    try:
        return JSONResponse(body).body
    except TypeError:
        return JSONResponse(_finite(jsonable_encoder(body))).body
    except ValueError:  # an inf or NaN somewhere
        return JSONResponse(_finite(body)).body


def cached_analysis_json(request: Request, store: StudyStore, study: Study, target: float | None = None) -> bytes:
    """`cached_analysis` as the response body: encoding a large analysis costs more than reading
    it from the cache, so the encoded body is kept too."""
    fingerprint = store.fingerprint(study.id)
    return results(request).get(
        ("analysis.json", target, fingerprint),
        lambda: _encode(cached_analysis(request, store, study, target, fingerprint)),
        tag=("analysis.json", study.id))


def cached_report(request: Request, store: StudyStore, studies: list[Study]) -> str:
    fingerprints = [store.fingerprint(s.id) for s in studies]

    def compute() -> str:
        datas = []
        for study, fp in zip(studies, fingerprints, strict=True):
            fresh = store.get_study(study.id) or study
            datas.append(study_results(store, fresh, analysis=cached_analysis(request, store, fresh, fingerprint=fp)))
        with _render:
            return render_report(datas)

    return results(request).get(("report", tuple(fingerprints)), compute,
                                tag=("report", tuple(sorted(s.id for s in studies))))  # any order: one entry
