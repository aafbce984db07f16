"""Read models computed from the store: per-optimizer comparison, best configs, export."""

from __future__ import annotations

import statistics
from typing import Any

from workers.trial import ROOT_FREE

from .models import Study
from .store import StudyStore


def optimizer_summaries(store: StudyStore, study: Study) -> list[dict[str, Any]]:
    spec = study.spec
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for opt, stage, status, n in store.count_trials(study.id):
        counts.setdefault(opt, {}).setdefault(str(stage), {})[status] = n
    ranked = store.best_trials(study.id, spec["mode"], spec["protocol"]["top_k"])
    out = []
    for opt in spec["optimizers"]:
        best = ranked.get(opt, [])
        top = [t.objective for t in best]
        stages = {}
        for i, n in enumerate(spec["protocol"]["stages"], start=1):
            by = counts.get(opt, {}).get(str(i), {})
            stages[str(i)] = {"total": n, "by_status": by}
        out.append({
            "optimizer": opt, "stages": stages,
            "best_objective": best[0].objective if best else None,
            "best_trial_id": best[0].id if best else None,
            "best_config": export_hyperparameters(spec, opt, best[0].config) if best else None,
            "top_k_mean": statistics.fmean(top) if top else None,
            "top_k_std": statistics.pstdev(top) if len(top) > 1 else (0.0 if top else None),
            "stage_spaces": (study.stage_spaces or {}).get(opt, {}),
        })
    return out


def export_hyperparameters(spec: dict, optimizer: str, config: dict) -> dict[str, Any]:
    """What the trial trained with: its sampled config plus what the worker added (B)."""
    hp = dict(config)
    if optimizer in ROOT_FREE:
        hp.setdefault("batch_size", spec["budget"]["batch_size"])
    return hp


def snippet(optimizer: str, hp: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in hp.items())
    return f'optimizers.build("{optimizer}", model.parameters(), {args})'


def best_configs(store: StudyStore, study: Study, k: int) -> dict[str, list[dict[str, Any]]]:
    spec = study.spec
    ranked = store.best_trials(study.id, spec["mode"], k)
    out = {}
    for opt in spec["optimizers"]:
        rows = []
        for rank, t in enumerate(ranked.get(opt, []), start=1):
            hp = export_hyperparameters(spec, opt, t.config)
            rows.append({"optimizer": opt, "rank": rank, "trial_id": t.id,
                         "objective": t.objective, "hyperparameters": hp,
                         "snippet": snippet(opt, hp)})
        out[opt] = rows
    return out
