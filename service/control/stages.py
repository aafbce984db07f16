"""A study's state machine: which (optimizer, stage) groups are runnable, and stage narrowing.

Per optimizer, stage 1 samples the study's space and stage k>1 samples ``narrow(stage k-1)``
as soon as every trial of stage k-1 has ended, independent of the other optimizers. A stage's
trials are created in the store when the stage opens (deterministic per index, so a restarted
study re-creates exactly the missing ones); its space and narrowing notes are saved with the
study. (The Optuna view follows the store on its own thread: service/followers/optuna_view.py.)

The protocol's math (sampling, narrowing) lives in `search_spaces`; this module only decides
when to apply it, and reads and writes through the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from search_spaces import SearchSpace, fresh_seeds, narrow
from service.control.samplers import Samplers
from service.control.scheduler import Group
from service.spec import ResolvedSpec
from service.statuses import FINISHED
from service.store.interface import RunnerCalls
from service.store.models import Study
from service.store.study_log import StudyLog

log = logging.getLogger("rootfree.stages")


@dataclass(frozen=True)
class Progress:
    groups: tuple[Group, ...]  # per optimizer: its finished stages and its current one
    done: bool  # every stage of every optimizer has ended

    @property
    def runnable(self) -> int:
        return sum(g.runnable for g in self.groups)


def planned_trials(spec: ResolvedSpec) -> int:
    """Every trial the protocol will run for the study (all stages of all optimizers, and the
    seed re-runs)."""
    return (sum(spec.protocol.stages) + spec.protocol.seeds) * len(spec.optimizers)


def seed_run_seeds(spec: ResolvedSpec, optimizer: str) -> list[int]:
    """The training seeds of an optimizer's seed runs. Paired studies: the same for every optimizer
    (so run i of each sees the same data order and initialisation and the runs pair up by seed);
    otherwise each optimizer its own (independent samples, as Welch's interval assumes)."""
    p = spec.protocol
    n = p.seeds
    if p.paired:
        return fresh_seeds(p.seed, n)
    order = spec.optimizers.index(optimizer)
    return fresh_seeds(p.seed, n * (order + 1))[order * n:]


class StageMachine:
    """Advances studies through their stages (the Optuna view follows the store on its own:
    service/followers/optuna_view.py)."""

    def __init__(self, store: RunnerCalls, samplers: Samplers | None = None):
        self.store = store
        self.samplers = samplers if samplers is not None else Samplers(store)
        self._empty: set[tuple[str, str, int]] = set()  # seed stages with no search result to re-run

    def advance(self, study: Study, slog: StudyLog | None = None) -> Progress:
        """Opens every stage that has become runnable and says what can run now.
        Raises `search_spaces.NarrowingError` when a stage cannot be narrowed (the study fails)."""
        spec = study.resolved
        counts: dict[tuple[str, int], dict[str, int]] = {}
        for opt, stage, status, n in self.store.count_trials(study.id):
            counts.setdefault((opt, stage), {})[status] = n
        groups: list[Group] = []
        sizes = list(spec.protocol.stages) + ([spec.protocol.seeds] if spec.protocol.seed_stage else [])
        for order, opt in enumerate(spec.optimizers):
            for stage, n in enumerate(sizes, start=1):
                c = counts.get((opt, stage), {})
                before = sum(c.values())
                if before < n and (study.id, opt, stage) not in self._empty:
                    created = self._open_stage(study, opt, stage, slog)
                    c = {**c, "pending": c.get("pending", 0) + created}
                    if before + created < n:  # a seed stage with nothing to re-run
                        self._empty.add((study.id, opt, stage))
                if (study.id, opt, stage) in self._empty:
                    n = sum(c.values())
                finished = sum(v for k, v in c.items() if k in FINISHED)
                groups.append(Group(opt, stage, order, runnable=c.get("pending", 0),
                                    running=c.get("running", 0), finished=finished >= n))
                if finished < n:
                    break  # the next stage narrows around this one: it waits
        done = all(g.finished for g in groups) and len(groups) == len(sizes) * len(spec.optimizers)
        return Progress(tuple(groups), done)

    def _open_stage(self, study: Study, optimizer: str, stage: int, slog: StudyLog | None) -> int:
        """Creates the stage's missing trials; returns how many it created."""
        spec = study.resolved
        p = spec.protocol
        sampler = self.samplers[p.method]
        if stage == p.seed_stage:
            return self._open_seed_stage(study, optimizer, stage, slog)
        saved = (self.store.get_study(study.id).stage_spaces or {}).get(optimizer, {})
        if str(stage) in saved:  # opened before a restart: the same space, the missing trials
            space = SearchSpace.from_dict(saved[str(stage)])
        else:
            space = SearchSpace.from_dict(spec.search_spaces[optimizer])
            notes: list[str] = []
            if stage > 1:
                prev_space = SearchSpace.from_dict(saved.get(str(stage - 1), spec.search_spaces[optimizer]))
                prev = self.store.trials(study.id, optimizer=optimizer, stage=stage - 1)
                space = narrow(prev_space, [(t.config, t.objective) for t in prev],
                               mode=spec.mode, top_k=p.top_k, margin=p.margin)
                notes = space.notes
            if sampler.note:
                notes = [*notes, sampler.note]
            self.store.save_stage_space(study.id, optimizer, stage, space.to_dict(), notes)
            for note in notes:
                if slog:
                    slog.event("%s stage %d: %s", optimizer, stage, note)
        n = p.stages[stage - 1]
        # a sampler that asks as slots free up (TPE) leaves {} here, filled when the trial is claimed
        configs = sampler.stage_configs(space, n, p.seed, stage)
        created = self.store.ensure_trials(study.id, optimizer, stage, configs, seeds=[p.seed] * n)
        if slog:
            slog.event("%s stage %d: %d trials over %s", optimizer, stage, n, describe(space.to_dict()))
        return created

    def _open_seed_stage(self, study: Study, optimizer: str, stage: int, slog: StudyLog | None) -> int:
        """The best search configuration of the optimizer, trained again with fresh seeds."""
        spec = study.resolved
        p = spec.protocol
        best = self.store.best_trials(study.id, spec.mode, 1, max_stage=p.search_stages).get(optimizer)
        if not best:
            if slog:
                slog.event("%s seed runs: no completed search trial to re-run", optimizer, level=logging.WARNING)
            return 0
        config = dict(best[0].config)
        seeds = seed_run_seeds(spec, optimizer)
        self.store.save_stage_space(study.id, optimizer, stage,
                                    {k: {"kind": "fixed", "value": v} for k, v in config.items()},
                                    [f"seed runs of trial {best[0].id} (stage {best[0].stage}, "
                                     f"index {best[0].index}), {p.seeds} seeds"])
        created = self.store.ensure_trials(study.id, optimizer, stage, [config] * len(seeds), seeds=seeds)
        if slog:
            slog.event("%s seed runs (stage %d): the best configuration (trial %d, %s %.4g) with seeds %s",
                       optimizer, stage, best[0].id, spec.metric, best[0].objective, seeds)
        return created


def describe(space: dict) -> str:
    """A one-line summary of a search space's dimensions for the study log."""
    try:
        parts = []
        for name, d in space.items():
            if "low" in d:
                parts.append(f"{name}~{d['kind']}[{fmt(d['low'])}, {fmt(d['high'])}]")
            elif "values" in d:
                parts.append(f"{name} in {d['values']}")
            else:
                parts.append(f"{name}={d.get('value')}")
        return ", ".join(parts)
    except (AttributeError, KeyError, TypeError):
        return str(space)


def fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
