"""Read models computed from the store: per-optimizer comparison, best configs, export."""

from __future__ import annotations

import statistics
from typing import Any

from service.domain.catalog import optimizer_facts
from service.domain.spec import ResolvedSpec
from service.results.analysis import analyse
from service.results.verdicts import safe_stat
from service.store.models import Study
from service.store.study_store import StudyStore


def optimizer_summaries(store: StudyStore, study: Study) -> list[dict[str, Any]]:
    return optimizer_summaries_many(store, [study])[study.id]


def optimizer_summaries_many(store: StudyStore, studies: list[Study]) -> dict[str, list[dict[str, Any]]]:
    """`optimizer_summaries` of several studies (a page of `GET /studies`) in three queries in all:
    counts, best trials and seed runs, each for every study at once."""
    counts: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
    for sid, opt, stage, status, n in store.count_trials_many([s.id for s in studies]):
        counts.setdefault(sid, {}).setdefault(opt, {}).setdefault(str(stage), {})[status] = n
    ranked_all = store.best_trials_many({s.id: (s.resolved.mode, s.resolved.protocol.top_k,
                                                s.resolved.protocol.search_stages) for s in studies})
    seeds_all = seed_runs_many(store, studies)
    result = {}
    for study in studies:
        spec = study.resolved
        p = spec.protocol
        ranked, seeds = ranked_all.get(study.id, {}), seeds_all.get(study.id, {})
        out = []
        for opt in spec.optimizers:
            best = ranked.get(opt, [])
            top = [t.objective for t in best]
            stages = {}
            sizes = [n * p.repeats for n in list(p.stages) + ([p.seeds] if p.seeds else [])]
            for i, n in enumerate(sizes, start=1):
                by = counts.get(study.id, {}).get(opt, {}).get(str(i), {})
                stages[str(i)] = {"total": n, "by_status": by}
            out.append({
                "seed_runs": seeds.get(opt),
                "optimizer": opt, "stages": stages,
                "best_objective": best[0].objective if best else None,
                "best_trial_id": best[0].id if best else None,
                "best_config": export_hyperparameters(spec, opt, best[0].config) if best else None,
                "top_k_mean": safe_stat(statistics.fmean, top),
                "top_k_std": safe_stat(statistics.pstdev, top) if len(top) > 1 else (0.0 if top else None),
                "stage_spaces": (study.stage_spaces or {}).get(opt, {}),
            })
        result[study.id] = out
    return result


def seed_runs(store: StudyStore, study: Study) -> dict[str, dict[str, Any]]:
    """Per optimizer, the seed re-runs of its best configuration: n, values (completed runs'
    objectives; a diverged run counts in n, not in the values), mean, std, median."""
    return seed_runs_many(store, [study]).get(study.id, {})


def seed_runs_many(store: StudyStore, studies: list[Study]) -> dict[str, dict[str, dict[str, Any]]]:
    """`seed_runs` of several studies, in one query."""
    stages = {s.id: s.resolved.protocol.search_stages + 1 for s in studies if s.resolved.protocol.seeds}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    seeds = {s.id: s.resolved.protocol.seeds for s in studies}
    for t in store.seed_trials_many(stages):
        if t.index >= seeds[t.study_id]:
            continue  # a later repeat's seed runs: the summary is one search's (repeat 0's)
        entry = out.setdefault(t.study_id, {}).setdefault(t.optimizer, {"n": 0, "values": [], "seeds": []})
        if t.status in ("completed", "diverged", "failed"):
            entry["n"] += 1
        if t.status == "completed" and t.objective is not None:
            entry["values"].append(t.objective)
            entry["seeds"].append(t.seed)
    for per in out.values():
        for entry in per.values():
            v = entry["values"]
            entry["mean"] = safe_stat(statistics.fmean, v)
            entry["std"] = safe_stat(statistics.stdev, v) if len(v) > 1 else (0.0 if v else None)
            entry["median"] = safe_stat(statistics.median, v)
    return out


def ranking(study: dict) -> list[dict]:
    """The optimizers of a `GET /studies/{id}` body, best first: by the seed runs' mean when
    there are seed runs, else by the best search trial (the paper's "best run")."""
    sign = 1 if study["spec"]["mode"] == "min" else -1

    def score(o: dict) -> tuple:
        seeds = o.get("seed_runs") or {}
        value = seeds.get("mean") if seeds.get("mean") is not None else o["best_objective"]
        return (value is None, sign * value if value is not None else 0.0)

    return sorted(study["optimizers"], key=score)


def export_hyperparameters(spec: ResolvedSpec, optimizer: str, config: dict) -> dict[str, Any]:
    """What the trial trained with: its sampled config plus what the worker added (B)."""
    hp = dict(config)
    if optimizer_facts(optimizer)[0] and "batch_size" in spec.budget:
        hp.setdefault("batch_size", spec.budget["batch_size"])
    return hp


def snippet(optimizer: str, hp: dict[str, Any]) -> str:
    """Code that builds the optimizer with these hyperparameters; a plugin's names its import path."""
    args = ", ".join(f"{k}={v!r}" for k, v in hp.items())
    plugin = optimizer_facts(optimizer)[1]
    if plugin:
        module, _, attribute = plugin.partition(":")
        return f"from {module} import {attribute.split('.')[0]}\n{attribute}(model.parameters(), {args})"
    return f'optimizers.build("{optimizer}", model.parameters(), {args})'


def best_configs(store: StudyStore, study: Study, k: int) -> dict[str, list[dict[str, Any]]]:
    spec = study.resolved
    ranked = store.best_trials(study.id, spec.mode, k, max_stage=spec.protocol.search_stages)
    out = {}
    for opt in spec.optimizers:
        rows = []
        for rank, t in enumerate(ranked.get(opt, []), start=1):
            hp = export_hyperparameters(spec, opt, t.config)
            rows.append({"optimizer": opt, "rank": rank, "trial_id": t.id,
                         "objective": t.objective, "hyperparameters": hp,
                         "snippet": snippet(opt, hp)})
        out[opt] = rows
    return out


def study_analysis(store: StudyStore, study: Study, target: float | None = None) -> dict[str, Any]:
    """`service.analysis.analyse` of a study, with the per-epoch histories aggregated in SQL
    (no report row is loaded into Python)."""
    spec = study.resolved
    costs = store.history_costs(study.id, spec.metric, spec.mode, target)
    trials = store.trial_dicts(study.id, history=False)
    return analyse(spec, study.stage_spaces or {}, trials, target, costs=costs)
