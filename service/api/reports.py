"""GET /report?study_id=A&study_id=B: one page for several studies (a cross-study table, the
paper's Figure 1 layout, a performance profile, then each study). One study: /studies/{id}/report."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from service.api.auth import Principal, current_user
from service.api.deps import get_store
from service.api.results import cached_report
from service.store.study_store import StudyStore

router = APIRouter(tags=["studies"], dependencies=[Depends(current_user)])


@router.get("/report", response_class=HTMLResponse)
def report(request: Request, study_id: list[str] = Query(..., min_length=1, max_length=20),
           store: StudyStore = Depends(get_store), user: Principal = Depends(current_user)):
    studies = []
    for sid in dict.fromkeys(study_id):  # in the order given, once each
        study = store.get_study(sid) if len(sid) <= 64 else None
        if study is None or not user.owns(study.owner):
            raise HTTPException(404, f"study {sid!r} not found")
        studies.append(study)
    # Cached until one of the studies changes; each study's analysis is shared with its own page.
    return HTMLResponse(cached_report(request, store, studies))
