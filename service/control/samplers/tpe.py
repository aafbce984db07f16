"""protocol.method = "tpe": each stage's configurations come from Optuna's TPESampler, asked when
a slot frees up (so later trials learn from earlier ones), inside the stage's space (stage 2: the
narrowed one). Seeded per (study seed, optimizer, stage); `constant_liar` keeps trials that run in
parallel apart. Stage k > 1 is seeded with the earlier stages' results that lie inside its space.

The sampler state lives in memory and is rebuilt from the store's finished trials after a restart
(Optuna's in-memory storage: the store stays the source of truth). With trials finishing in a
timing-dependent order, a TPE study is reproducible in its space and seed, not trial by trial.
A finished trial reaches the sampler as the Optuna view shows it (service/store/optuna_mapping.py):
a trial stopped by ASHA is PRUNED with its last value, which TPE ranks after the complete ones.
"""

from __future__ import annotations

import hashlib
import logging

import optuna

from search_spaces import SearchSpace
from service.control.samplers.base import Sampler
from service.domain.statuses import FINISHED
from service.store.optuna_mapping import last_report, optuna_state

log = logging.getLogger("rootfree.tpe")


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


class TpeSampler(Sampler):
    name = "tpe"
    asks = True
    note = ("sampler: Optuna TPESampler (seeded per study seed, optimizer and stage; constant_liar), "
            "asked as slots free up")

    def __init__(self, store):
        self.store = store
        self._groups: dict[tuple[str, str, int], dict] = {}

    def _group(self, study, optimizer: str, stage: int) -> dict:
        key = (study.id, optimizer, stage)
        if key in self._groups:
            return self._groups[key]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        spec = study.resolved
        space_dict = (self.store.get_study(study.id).stage_spaces or {})[optimizer][str(stage)]
        space = SearchSpace.from_dict(space_dict)
        dists = space.to_optuna()
        n = spec.protocol.stages[stage - 1]
        sampler = optuna.samplers.TPESampler(seed=_seed(spec.protocol.seed, optimizer, stage),
                                             constant_liar=True, n_startup_trials=max(2, min(10, n // 4)))
        ostudy = optuna.create_study(direction="minimize" if spec.mode == "min" else "maximize",
                                     sampler=sampler)
        seeded = 0
        for t in self.store.trials(study.id, optimizer=optimizer):
            if t.stage > stage or not t.config or t.status not in FINISHED:
                continue
            state, value = optuna_state(t.status, t.objective)  # as the Optuna view shows it
            try:
                ostudy.add_trial(optuna.trial.create_trial(
                    params={k: v for k, v in t.config.items() if k in dists},
                    distributions={k: dists[k] for k in t.config if k in dists},
                    value=value, state=state, intermediate_values=last_report(state, value, t.epochs)))
                seeded += 1
            except ValueError:
                continue  # outside this stage's (narrowed) space
        group = {"study": ostudy, "dists": dists, "order": list(space_dict), "pending": {}, "seeded": seeded}
        self._groups[key] = group
        return group

    def stage_configs(self, space: SearchSpace, n: int, seed: int, stage: int) -> list[dict]:
        return [{} for _ in range(n)]  # each asked when its trial is claimed

    def ask(self, study, optimizer: str, stage: int, trial_id: int) -> dict:
        g = self._group(study, optimizer, stage)
        ot = g["study"].ask(g["dists"])
        g["pending"][trial_id] = ot
        return {name: ot.params[name] for name in g["order"] if name in ot.params}

    def tell(self, t) -> None:
        """A finished trial (the store's row) back to its group's sampler."""
        g = self._groups.get((t.study_id, t.optimizer, t.stage))
        ot = g["pending"].pop(t.id, None) if g else None
        if ot is None:
            return
        state, value = optuna_state(t.status, t.objective)
        for epoch, v in last_report(state, value, t.epochs or 0).items():
            ot.report(v, epoch)  # what TPE ranks a pruned trial by
        states = optuna.trial.TrialState
        if state == states.COMPLETE:
            g["study"].tell(ot, value)
        else:
            g["study"].tell(ot, state=states.PRUNED if state == states.PRUNED else states.FAIL)

    def forget(self, study_id: str) -> None:
        for key in [k for k in self._groups if k[0] == study_id]:
            del self._groups[key]
