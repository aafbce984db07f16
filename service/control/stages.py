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

import numpy as np

from search_spaces import SearchSpace, fresh_seeds, narrow
from service.control.samplers import Samplers
from service.control.scheduler import Group
from service.domain.spec import ResolvedSpec
from service.domain.statuses import FINISHED, RESULTS
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
    seed re-runs, in every repeat)."""
    p = spec.protocol
    return (sum(p.stages) + p.seeds) * p.repeats * len(spec.optimizers)


def repeat_seed(seed: int, repeat: int) -> int:
    """The sampler (and search-training) seed of a repeat: the study's seed for repeat 0 (a study
    without repeats is unchanged), else a 32-bit pure function of (seed, repeat)."""
    if repeat == 0:
        return seed
    return int(np.random.SeedSequence((seed, 0xE9EA7, repeat)).generate_state(1)[0])


def seed_run_seeds(spec: ResolvedSpec, optimizer: str, repeat: int = 0) -> list[int]:
    """The training seeds of an optimizer's seed runs (of one repeat). Paired studies: the same for
    every optimizer (so run i of each sees the same data order and initialisation and the runs pair
    up by seed); otherwise each optimizer its own (independent samples, as Welch's interval assumes)."""
    p = spec.protocol
    n, base = p.seeds, repeat_seed(p.seed, repeat)
    if p.paired:
        return fresh_seeds(base, n)
    order = spec.optimizers.index(optimizer)
    return fresh_seeds(base, n * (order + 1))[order * n:]


def repeat_key(optimizer: str, repeat: int) -> str:
    """Where a repeat's stage spaces are kept in the study's stage_spaces: repeat 0 under the
    optimizer itself (what every reader of one search reads), repeat r >= 1 beside it."""
    return optimizer if repeat == 0 else f"{optimizer}/repeat {repeat}"


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
        r = spec.protocol.repeats
        sizes = [n * r for n in spec.protocol.stages] + ([spec.protocol.seeds * r] if spec.protocol.seed_stage else [])
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
        """Creates the stage's missing trials (every repeat's, repeat r at indices r*n..); returns how
        many it created."""
        spec = study.resolved
        p = spec.protocol
        if stage == p.seed_stage:
            return self._open_seed_stage(study, optimizer, stage, slog)
        n = p.stages[stage - 1]
        configs: list[dict] = []
        seeds: list[int] = []
        for repeat in range(p.repeats):
            configs += self._repeat_configs(study, optimizer, stage, repeat, slog)
            seeds += [repeat_seed(p.seed, repeat)] * n
        return self.store.ensure_trials(study.id, optimizer, stage, configs, seeds=seeds)

    def _repeat_configs(self, study: Study, optimizer: str, stage: int, repeat: int,
                        slog: StudyLog | None) -> list[dict]:
        """One repeat's configurations of a search stage: its space (saved once, so a restart
        re-creates the same trials), narrowed around that repeat's previous stage."""
        spec = study.resolved
        p = spec.protocol
        sampler = self.samplers[p.method]
        key = repeat_key(optimizer, repeat)
        saved = (self.store.get_study(study.id).stage_spaces or {}).get(key, {})
        label = optimizer if p.repeats == 1 else f"{optimizer} repeat {repeat}"
        if str(stage) in saved:  # opened before a restart: the same space, the missing trials
            space = SearchSpace.from_dict(saved[str(stage)])
        else:
            space = SearchSpace.from_dict(spec.search_spaces[optimizer])
            notes: list[str] = []
            if stage > 1:
                prev_space = SearchSpace.from_dict(saved.get(str(stage - 1), spec.search_spaces[optimizer]))
                lo, hi = repeat * p.stages[stage - 2], (repeat + 1) * p.stages[stage - 2]
                prev = [t for t in self.store.trials(study.id, optimizer=optimizer, stage=stage - 1)
                        if lo <= t.index < hi]
                space = narrow(prev_space, [(t.config, t.objective) for t in prev],
                               mode=spec.mode, top_k=p.top_k, margin=p.margin)
                notes = space.notes
            if sampler.note:
                notes = [*notes, sampler.note]
            self.store.save_stage_space(study.id, key, stage, space.to_dict(), notes)
            for note in notes:
                if slog:
                    slog.event("%s stage %d: %s", label, stage, note)
        n = p.stages[stage - 1]
        if slog:
            slog.event("%s stage %d: %d trials over %s", label, stage, n, describe(space.to_dict()))
        # a sampler that asks as slots free up (TPE) leaves {} here, filled when the trial is claimed
        return sampler.stage_configs(space, n, repeat_seed(p.seed, repeat), stage)

    def _open_seed_stage(self, study: Study, optimizer: str, stage: int, slog: StudyLog | None) -> int:
        """Each repeat's best search configuration of the optimizer, trained again with fresh seeds
        (repeats after one without a completed search trial are left out: indices stay contiguous)."""
        spec = study.resolved
        p = spec.protocol
        # the ranking of store.best_trials: the furthest trained first, then the objective, stage, index
        search = [t for t in self.store.trials(study.id, optimizer=optimizer)
                  if t.stage <= p.search_stages and t.status in RESULTS and t.objective is not None]
        sign = 1.0 if spec.mode == "min" else -1.0
        configs: list[dict] = []
        seeds: list[int] = []
        for repeat in range(p.repeats):
            mine = [t for t in search if p.repeat_of(t.stage, t.index) == repeat]
            if not mine:
                if slog:
                    slog.event("%s seed runs%s: no completed search trial to re-run", optimizer,
                               f" of repeat {repeat}" if p.repeats > 1 else "", level=logging.WARNING)
                break
            best = min(mine, key=lambda t: (-(t.epochs or 0), sign * t.objective, t.stage, t.index))
            config = dict(best.config)
            run_seeds = seed_run_seeds(spec, optimizer, repeat)
            self.store.save_stage_space(study.id, repeat_key(optimizer, repeat), stage,
                                        {k: {"kind": "fixed", "value": v} for k, v in config.items()},
                                        [f"seed runs of trial {best.id} (stage {best.stage}, "
                                         f"index {best.index}), {p.seeds} seeds"])
            configs += [config] * len(run_seeds)
            seeds += run_seeds
            if slog:
                slog.event("%s seed runs (stage %d%s): the best configuration (trial %d, %s %.4g) with seeds %s",
                           optimizer, stage, f", repeat {repeat}" if p.repeats > 1 else "", best.id,
                           spec.metric, best.objective, run_seeds)
        return self.store.ensure_trials(study.id, optimizer, stage, configs, seeds=seeds)


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
