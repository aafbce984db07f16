"""The store's studies as Optuna studies: one per (rootfree study, optimizer) in the same database
(Optuna's RDBStorage), so ``optuna-dashboard <database url>`` or plain ``optuna.load_study`` show a
study while it runs. The follower that keeps them current is service/followers/optuna_view.py.

`OptunaView` maps the store onto Optuna: a trial appears when it starts (RUNNING), gets one
intermediate value per reported epoch, and ends COMPLETE, PRUNED (stopped by early stopping, with
its last value) or FAIL (failed or diverged, the reason in the ``reason`` user attribute), with
the store's own start and end times; state and value come from service/store/optuna_mapping.py,
as the TPE sampler's do. It only reads the store and is idempotent (every Optuna trial carries its
``rootfree_trial_id``), so `sync_study` rebuilds a view from scratch or completes a half-written
one, and a restarted controller picks up where the last one stopped.
"""

from __future__ import annotations

import math
import warnings
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from service.store.interface import Store
from service.store.models import Study, Trial
from service.store.optuna_mapping import finite, last_report, optuna_state

STUDY_ATTR = "rootfree_study_id"
TRIAL_ATTR = "rootfree_trial_id"


def view_name(study_name: str, optimizer: str) -> str:
    return f"{study_name}/{optimizer}"


def _local_naive(dt: datetime | None) -> datetime | None:
    """Optuna keeps naive local times (``datetime.now()``); the store keeps UTC (naive on SQLite)."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone().replace(tzinfo=None)


def _utc_naive(dt: datetime | None) -> datetime | None:
    """What Optuna's RDBStorage columns hold: naive UTC (the store: UTC, naive on SQLite)."""
    if dt is None or dt.tzinfo is None:
        return dt
    return dt.astimezone(UTC).replace(tzinfo=None)


def optuna_params(space_dict: dict, config: dict) -> tuple[dict, dict]:
    """(params, distributions) of one trial for Optuna. Log-uniform parameters get log
    distributions; a 1-minus-log-uniform parameter ``x`` (Optuna has no such scale) becomes
    ``one_minus_x`` on a log distribution, so plots read like the search space. A range is widened
    to hold the trial's value (Optuna accepts differing ranges for one parameter name)."""
    import optuna.distributions as od

    params: dict[str, Any] = {}
    dists: dict[str, Any] = {}
    for name, d in space_dict.items():
        if name not in config:
            continue
        v, kind = config[name], d.get("kind")
        if kind in ("fixed", "choice"):
            choices = [d["value"]] if kind == "fixed" else list(d["values"])
            if v not in choices or not all(c is None or isinstance(c, bool | int | float | str) for c in choices):
                continue
            params[name], dists[name] = v, od.CategoricalDistribution(choices)
            continue
        if finite(v) is None:
            continue
        low, high = float(d["low"]), float(d["high"])
        if kind == "one_minus_log_uniform":
            name, v, low, high, log_scale = f"one_minus_{name}", 1.0 - v, 1.0 - high, 1.0 - low, True
        else:
            log_scale = kind == "log_uniform"
        if log_scale and (v <= 0 or low <= 0):
            continue  # not on a log scale: left to the `config` user attribute
        low, high = min(low, v), max(high, v)
        if d.get("int") and kind != "one_minus_log_uniform":
            params[name], dists[name] = int(v), od.IntDistribution(int(math.floor(low)), int(math.ceil(high)),
                                                                  log=log_scale)
        else:
            params[name], dists[name] = float(v), od.FloatDistribution(low, high, log=log_scale)
    return params, dists


class OptunaView:
    """Writes the store's studies to Optuna studies in `url` (default: the store's database)."""

    def __init__(self, store: Store, url: str | None = None):
        self.store = store
        self.url = url or store.engine.url.render_as_string(hide_password=False)
        self._storage = None
        self._views: dict[tuple[str, str], int] = {}  # (study, optimizer) -> Optuna study id
        self._space_attrs: dict[int, Any] = {}  # Optuna study id -> the stage spaces written
        # rootfree trial id -> [Optuna trial id, Optuna state name, epochs written]
        self._trials: dict[int, list] = {}
        self._loaded: set[str] = set()

    @property
    def storage(self):
        if self._storage is None:
            import optuna
            from sqlalchemy.exc import OperationalError

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            try:
                self._storage = optuna.storages.RDBStorage(self.url)
            except OperationalError:  # another process created Optuna's tables at the same moment
                self._storage = optuna.storages.RDBStorage(self.url)
        return self._storage

    def close(self) -> None:
        if self._storage is not None:
            self._storage.remove_session()
            self._storage.engine.dispose()
            self._storage = None

    def forget(self) -> None:
        """Drops what this object remembers (after a failed write: the next sync re-reads Optuna)."""
        self._views.clear()
        self._space_attrs.clear()
        self._trials.clear()
        self._loaded.clear()

    # ------------------------------------------------------------------ studies
    def _load(self, study_id: str) -> None:
        """Reads the study's existing views (a restart, or a rebuild) once."""
        if study_id in self._loaded:
            return
        for fs in self.storage.get_all_studies():
            if fs.user_attrs.get(STUDY_ATTR) != study_id:
                continue
            opt = fs.user_attrs.get("optimizer")
            self._views[(study_id, opt)] = fs._study_id
            self._space_attrs[fs._study_id] = fs.user_attrs.get("stage_spaces")
            for t in self.storage.get_all_trials(fs._study_id, deepcopy=False):
                rid = t.user_attrs.get(TRIAL_ATTR)
                if rid is not None:
                    self._trials[int(rid)] = [t._trial_id, t.state.name, set(t.intermediate_values)]
        self._loaded.add(study_id)

    def _view(self, study: Study, optimizer: str) -> int:
        """The Optuna study of (study, optimizer), created with its attributes when missing."""
        import optuna

        self._load(study.id)
        key = (study.id, optimizer)
        spaces = (study.stage_spaces or {}).get(optimizer, {})
        if key not in self._views:
            taken = set(optuna.get_all_study_names(self.storage))
            name = view_name(study.name, optimizer)
            if name in taken:  # another study of that name: a short id tells them apart
                name = f"{name} ({study.id[:8]})"
            spec = study.resolved
            created = optuna.create_study(storage=self.storage, study_name=name, load_if_exists=True,
                                          direction="minimize" if spec.mode == "min" else "maximize")
            with warnings.catch_warnings():  # experimental since Optuna 3.2, still there in 5.0
                warnings.simplefilter("ignore")
                created.set_metric_names([spec.metric])
            attrs = {STUDY_ATTR: study.id, "study_name": study.name, "optimizer": optimizer,
                     "workload": spec.workload, "metric": spec.metric, "mode": spec.mode,
                     "scheme": spec.protocol.scheme, "protocol": spec.protocol.model_dump(mode="json"),
                     "budget": dict(spec.budget)}
            for k, v in attrs.items():
                created.set_user_attr(k, v)
            self._views[key] = created._study_id
        sid = self._views[key]
        if self._space_attrs.get(sid) != spaces:  # a stage opened since
            self.storage.set_study_user_attr(sid, "stage_spaces", spaces)
            self._space_attrs[sid] = spaces
        return sid

    def delete(self, study_id: str) -> int:
        """Removes every Optuna view of the study (this view's and the per-stage ones of before)."""
        n = 0
        for fs in self.storage.get_all_studies():
            if fs.user_attrs.get(STUDY_ATTR) == study_id or fs.study_name.startswith(f"{study_id}/"):
                self.storage.delete_study(fs._study_id)
                n += 1
        for key in [k for k in self._views if k[0] == study_id]:
            del self._views[key]
        self._loaded.discard(study_id)
        return n

    # ------------------------------------------------------------------ trials
    def _frozen_parts(self, study: Study, t: Trial, history: list[dict] | None):
        """What Optuna keeps of a trial: state, value, intermediate values, params,
        distributions, user attributes."""
        state, value = optuna_state(t.status, t.objective)
        metric = study.resolved.metric
        if history is None:
            history = self.store.history(t.id)
        steps = {int(r.get("epoch") or 0): finite(r.get(metric)) for r in history}
        steps = {k: v for k, v in steps.items() if v is not None}
        steps = {**last_report(state, value, t.epochs), **steps}  # a pruned trial's last value, as TPE has it
        spaces = (study.stage_spaces or {}).get(t.optimizer, {})
        space = spaces.get("1") or study.resolved.search_spaces.get(t.optimizer, {})
        params, dists = optuna_params(space, t.config or {})
        attrs: dict[str, Any] = {TRIAL_ATTR: t.id, "stage": t.stage, "index": t.index, "seed": t.seed,
                                 "status": t.status, "config": t.config}
        if state.name in ("FAIL", "PRUNED"):
            attrs["reason"] = t.error or t.status
        return state, value, steps, params, dists, attrs

    def _insert_new(self, study: Study, new: list[tuple[Trial, list[dict] | None]]) -> None:
        """Trials Optuna has not seen yet, written as Optuna's RDBStorage would write them but in
        one transaction of plain inserts: its `create_new_trial` takes some 30 statements and
        15 ms a trial, holding SQLite's write lock all along, which the runner then waits for
        (issue 25: a third of the trial throughput on 2 cores). Trial numbers are counted once per
        call, under a lock on the view's studies (see below)."""
        import json

        from optuna.distributions import distribution_to_json
        from optuna.storages._rdb import models as om
        from optuna.trial import TrialState

        if not new:
            return
        views = {t.optimizer: self._view(study, t.optimizer) for t, _ in new}
        rows = []
        for t, history in new:
            state, value, steps, params, dists, attrs = self._frozen_parts(study, t, history)
            start = _utc_naive(t.started_at) or _utc_naive(t.finished_at) or datetime.now(UTC).replace(tzinfo=None)
            end = (_utc_naive(t.finished_at) or start) if state != TrialState.RUNNING else None
            rows.append((t, views[t.optimizer], state, value, steps, params, dists, attrs, start, end))
        with self.storage.engine.begin() as conn:
            # Numbers are counted, so the count and the inserts must be one decision even when a
            # second writer (`rootfree optuna-sync`, an old leader's view) syncs at the same
            # time: a no-op update of the study rows locks them (PostgreSQL) and takes SQLite's
            # write lock before the count, as Optuna's own create_new_trial locks its study.
            studies = om.StudyModel.__table__
            conn.execute(update(studies).where(studies.c.study_id.in_(sorted(set(views.values()))))
                         .values(study_id=studies.c.study_id))
            numbers = {sid: conn.scalar(select(func.count()).select_from(om.TrialModel.__table__)
                                        .where(om.TrialModel.__table__.c.study_id == sid))
                       for sid in set(views.values())}
            params_rows, values_rows, attr_rows, step_rows = [], [], [], []
            for t, sid, state, value, steps, params, dists, attrs, start, end in rows:
                oid = conn.scalar(insert(om.TrialModel.__table__).values(
                    number=numbers[sid], study_id=sid, state=state, datetime_start=start, datetime_complete=end)
                    .returning(om.TrialModel.__table__.c.trial_id))
                numbers[sid] += 1
                for name, v in params.items():
                    params_rows.append({"trial_id": oid, "param_name": name,
                                        "param_value": dists[name].to_internal_repr(v),
                                        "distribution_json": distribution_to_json(dists[name])})
                if value is not None:
                    stored, kind = om.TrialValueModel.value_to_stored_repr(value)
                    values_rows.append({"trial_id": oid, "objective": 0, "value": stored, "value_type": kind})
                for k, v in attrs.items():
                    attr_rows.append({"trial_id": oid, "key": k, "value_json": json.dumps(v)})
                for step, v in steps.items():
                    stored, kind = om.TrialIntermediateValueModel.intermediate_value_to_stored_repr(v)
                    step_rows.append({"trial_id": oid, "step": step, "intermediate_value": stored,
                                      "intermediate_value_type": kind})
                self._trials[t.id] = [oid, state.name, set(steps)]
            for model, batch in ((om.TrialParamModel, params_rows), (om.TrialValueModel, values_rows),
                                 (om.TrialUserAttributeModel, attr_rows),
                                 (om.TrialIntermediateValueModel, step_rows)):
                if batch:
                    conn.execute(insert(model.__table__), batch)

    def _sync_trial(self, study: Study, t: Trial, history: list[dict] | None) -> None:
        """A trial Optuna has seen (`_insert_new` writes the others): its end, once it has one."""
        from optuna.trial import TrialState

        mirror = self._trials[t.id]
        if mirror[1] != "RUNNING":
            return  # finished in Optuna: final (a trial that restarts runs as the same RUNNING one)
        state, value = optuna_state(t.status, t.objective)
        if state == TrialState.RUNNING:
            return  # its reports arrive through `report`
        state, value, steps, _, _, _ = self._frozen_parts(study, t, history)
        start = _local_naive(t.started_at) or _local_naive(t.finished_at) or datetime.now()
        end = _local_naive(t.finished_at) or start
        oid, _, written = mirror
        for step, v in steps.items():
            if step not in written:
                self.storage.set_trial_intermediate_value(oid, step, v)
                written.add(step)
        self.storage.set_trial_user_attr(oid, "status", t.status)
        if state in (TrialState.FAIL, TrialState.PRUNED):
            self.storage.set_trial_user_attr(oid, "reason", t.error or t.status)
        self.storage.set_trial_state_values(oid, state, [value] if value is not None else None)
        self._set_times(oid, start, end)
        mirror[1] = state.name

    def _set_times(self, optuna_trial_id: int, start: datetime, end: datetime) -> None:
        """The store's start and end (Optuna stamps the moment of the write)."""
        from optuna.storages._rdb.models import TrialModel

        with self.storage.engine.begin() as conn:  # Optuna's columns hold naive UTC
            conn.execute(update(TrialModel.__table__).where(TrialModel.__table__.c.trial_id == optuna_trial_id)
                         .values(datetime_start=_utc_naive(start.astimezone()),
                                 datetime_complete=_utc_naive(end.astimezone())))

    def report(self, trial_id: int, epoch: int, row: dict, metric: str | None) -> None:
        """One per-epoch report of a RUNNING trial as an intermediate value."""
        mirror = self._trials.get(trial_id)
        v = finite(row.get(metric)) if metric else None
        if mirror is None or mirror[1] != "RUNNING" or v is None or epoch in mirror[2]:
            return
        self.storage.set_trial_intermediate_value(mirror[0], epoch, v)
        mirror[2].add(epoch)

    def sync_trials(self, study: Study, full: bool = False) -> int:
        """Mirrors the study's started trials whose state Optuna does not have yet; returns how many
        it wrote. `full`: also each optimizer's view (a study whose trials have not started)."""
        self._load(study.id)
        if full:
            for opt in study.resolved.optimizers:
                self._view(study, opt)
        with self.store.session() as s:
            rows = s.execute(select(Trial.id, Trial.status).where(
                Trial.study_id == study.id, Trial.status != "pending")).all()
            stale = [tid for tid, status in rows
                     if tid not in self._trials or (self._trials[tid][1] == "RUNNING" and status != "running")]
            trials = (s.scalars(select(Trial).where(Trial.id.in_(stale)).order_by(Trial.id)).all()
                      if stale else [])
        if not trials:
            return 0
        histories = self.store.histories([t.id for t in trials])
        seen = [t for t in trials if t.id in self._trials]
        self._insert_new(study, [(t, histories[t.id]) for t in trials if t.id not in self._trials])
        for t in seen:
            self._sync_trial(study, t, histories[t.id])
        return len(trials)

    def sync_study(self, study_id: str) -> int:
        """Builds or completes the study's view (idempotent); returns the trials written."""
        study = self.store.get_study(study_id)
        if study is None:
            raise KeyError(study_id)
        for fs in self.storage.get_all_studies():  # the per-stage views of before this one
            if fs.study_name.startswith(f"{study_id}/") and STUDY_ATTR not in fs.user_attrs:
                self.storage.delete_study(fs._study_id)
        return self.sync_trials(study, full=True)
