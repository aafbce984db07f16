"""What the rest of the service may call on the study store, in one place (as Optuna's
`BaseStorage` is for its storages): `Store` lists every call of api/, control/, results/ and
followers/, grouped by the tables they touch; `RunnerCalls` is the part the runner (control/) may
make: `RunnerStore` retries each through a database outage and fences each by the runner lease
but one read (service/store/runner_store.py says which, call by call).

`StudyStore` (service/store/study_store.py) is the SQL implementation, a facade whose calls are
delegated to one repository per table group (the groups below); callers that only need
the calls (the Optuna view, the followers, the runner's parts) annotate with these protocols, so
nothing in the store imports the class that implements them. The lease, the tokens and the audit
trail are functions over `Store.engine` (service/store/lease.py, tokens.py, audit.py): they run
outside the runner's fence on purpose (the lease fences the runner; it cannot fence itself).

Reads return the ORM rows of service/store/models.py (detached: `expire_on_commit=False`), the
typed records of service/domain/records.py (the aggregate reads: counts, rankings, progress), or
the plain dicts each call documents (the trials as the analysis reads them, the cluster record).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from service.domain.outcomes import ClaimOutcome
    from service.domain.records import (
        OptimizerGauge,
        RankedTrial,
        ReportRow,
        SeedRun,
        StudyTrialCount,
        TrialCount,
        TrialProgress,
    )
    from service.domain.spec import ResolvedSpec
    from service.store.models import Study, Suite, Trial


class Store(Protocol):
    # ------------------------------------------------------------------ the database
    url: str
    engine: Engine  # the lease, the tokens and the audit trail are functions over it

    def session(self) -> Session:
        """A new ORM session (every call of the store opens its transactions through it: the
        runner's store swaps in fenced ones)."""

    def with_sessions(self, sessions: sessionmaker) -> Store:
        """The same store whose transactions open through `sessions` (the runner's fenced ones)."""

    # ------------------------------------------------------------------ studies (api; runner: fenced)
    def create_study(self, spec: ResolvedSpec, idempotency_key: str | None, owner: str | None = None,
                     audit: dict[str, Any] | None = None, max_active: int | None = None) -> tuple[Study, bool]:
        """Admits a study (idempotent per owner and key, under the owner's quota): (study, created)."""

    def get_study(self, study_id: str) -> Study | None:
        """One study row (runner: fenced)."""

    def list_studies(self, status: str | None, limit: int, offset: int,
                     owner: str | None = None) -> tuple[list[Study], int]:
        """A page of studies, newest first, and the total."""

    def studies_with_status(self, *statuses: str) -> list[Study]:
        """The studies in these statuses, oldest first (runner: fenced)."""

    def set_status(self, study_id: str, status: str, *, only_from: tuple[str, ...] = (),
                   error: str | None = None) -> bool:
        """Moves a study to `status` (only from `only_from` when given); False: it was not there
        (runner: fenced)."""

    def save_stage_space(self, study_id: str, optimizer: str, stage: int, space: dict,
                         notes: list[str]) -> None:
        """The search space a stage opened with, and its notes (runner: fenced)."""

    def delete_study(self, study_id: str) -> None:
        """The study, its trials and their reports."""

    def delete_optuna_studies(self, study_id: str) -> int:
        """The study's Optuna views; how many."""

    def active_counts(self) -> dict[str, dict[str, int]]:
        """Trials per status of every queued or running study (the queue view)."""

    def count_studies(self, *statuses: str, owner: str | None = None) -> int:
        """Studies in these statuses (health)."""

    # ------------------------------------------------------------------ suites (api)
    def create_suite(self, spec: dict[str, Any], study_specs: list[ResolvedSpec], idempotency_key: str | None,
                     owner: str | None = None, audit: dict[str, Any] | None = None,
                     max_active: int | None = None) -> tuple[Suite, bool]:
        """Admits a suite and its studies in one transaction: (suite, created)."""

    def get_suite(self, suite_id: str) -> Suite | None:
        """One suite row."""

    def suite_studies(self, suite_id: str) -> list[Study | None]:
        """The suite's studies in its workload order (None: deleted since)."""

    def set_suite_spec(self, suite_id: str, spec: dict[str, Any]) -> None:
        """Replaces a suite's stored spec (a target set freezes its targets into it, once)."""

    def suites_using_targets(self, target_set_id: str) -> list[str]:
        """The ids of the suites whose targets come from this target set."""

    def delete_suite(self, suite_id: str) -> None:
        """The suite's row and each of its studies (with their trials and reports)."""

    # ------------------------------------------------------------------ the runner's trials (runner: fenced)
    def ensure_trials(self, study_id: str, optimizer: str, stage: int,
                      configs: list[dict[str, Any]], seeds: list[int] | None = None) -> int:
        """Creates the stage's missing trials (pending); how many."""

    def claim_pending(self, study_id: str, optimizer: str, stage: int, claim: str | None = None) -> Trial | None:
        """Claims a group's lowest-index free pending trial (idempotent per `claim`)."""

    def release_trial(self, trial_id: int) -> None:
        """A claimed trial that did not finish goes back to pending."""

    def reset_interrupted(self, study_id: str) -> int:
        """Trials a dead controller left running go back to pending; how many ran."""

    def mark_started(self, trial_id: int) -> None:
        """The trial's worker started it: `running`."""

    def record_result(self, trial_id: int, row: dict[str, Any], metric: str) -> str | None:
        """One per-epoch report; a final one ends the trial. The status after it (None: not stored)."""

    def set_checkpoint(self, trial_id: int, path: str | None) -> None:
        """Where the trial's last checkpoint is."""

    def mark_stopped(self, trial_id: int, reason: str) -> bool:
        """Early stopping ended the trial; False when it had already ended."""

    def set_config(self, trial_id: int, config: dict[str, Any]) -> None:
        """The configuration a sampler chose at the claim (api too: external TPE trials)."""

    def mark_failed(self, trial_id: int, error: str, refine: bool = False) -> None:
        """The trial failed (`refine`: this error replaces a failed trial's)."""

    def count_attempt(self, trial_id: int) -> None:
        """The trial lost its worker and Tune retries it from its last checkpoint: one more attempt."""

    # ------------------------------------------------------------------ trial reads (api; runner: fenced)
    def trials(self, study_id: str, optimizer: str | None = None, stage: int | None = None,
               status: str | None = None, limit: int | None = None, offset: int = 0,
               after: Trial | None = None) -> list[Trial]:
        """Trials in (optimizer, stage, index) order; `after`: keyset pagination."""

    def trial(self, study_id: str, trial_id: int) -> Trial | None:
        """One trial of the study (None: not one of its trials)."""

    def count_trials(self, study_id: str) -> list[TrialCount]:
        """(optimizer, stage, status, count) rows of a study."""

    # ------------------------------------------------------------------ ranking (results; runner: retried only)
    def best_trials(self, study_id: str, mode: str, k: int,
                    max_stage: int | None = None) -> dict[str, list[RankedTrial]]:
        """The top-k finished trials per optimizer, best first (without histories)."""

    def best_trials_many(self, wanted: dict[str, tuple[str, int, int | None]],
                         ) -> dict[str, dict[str, list[RankedTrial]]]:
        """`best_trials` of several studies in one query."""

    def seed_trials_many(self, stages: dict[str, int]) -> list[SeedRun]:
        """The trials of one stage per study (the seed re-runs)."""

    def count_trials_many(self, study_ids: list[str]) -> list[StudyTrialCount]:
        """(study id, optimizer, stage, status, count) rows of several studies."""

    # ------------------------------------------------------------------ reports (results, api; runner: fenced)
    def histories(self, trial_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """Per-epoch report rows of some trials, in epoch order."""

    def history(self, trial_id: int) -> list[dict[str, Any]]:
        """One trial's per-epoch report rows."""

    def trial_dicts(self, study_id: str, history: bool = True) -> list[dict[str, Any]]:
        """Every trial of a study as a plain dict (with its history: the analysis' input)."""

    def history_costs(self, study_id: str, metric: str, mode: str,
                      target: float | None = None) -> dict[str, dict[str, Any]]:
        """Per optimizer: time per epoch, peak memory, time to `target` (aggregated in SQL)."""

    def fingerprint(self, study_id: str) -> tuple:
        """Changes whenever anything the results read of a study changes (a cache key)."""

    def rung_values(self, study_id: str, optimizer: str, stage: int, epoch: int, metric: str) -> list[float]:
        """The objectives a group's trials reported at one epoch (ASHA's rung; runner: fenced)."""

    # ------------------------------------------------------------------ external trials (control/external_trials.py)
    def expire_claims(self, study_id: str) -> int:
        """Lapsed claims go back to pending; how many."""

    def end_claims(self, study_id: str, reason: str) -> int:
        """The study ended (cancel, delete): its claimed trials fail with `reason` at once; how many."""

    def has_lapsed_claims(self, study_id: str) -> bool:
        """Whether a claim of the study has lapsed (a read then expires it, so it shows as pending)."""

    def claim_external(self, study_id: str, optimizer: str, stage: int, token: str,
                       lease_s: float) -> Trial | None:
        """Claims a group's lowest-index pending trial for a client."""

    def claim_next_external(self, study_id: str,
                            choose: Callable[[list[TrialCount]], tuple[str, int] | None],
                            token: str, lease_s: float) -> Trial | None:
        """Claims the trial `choose` picks, under the study's claim lock."""

    def renew_claim(self, study_id: str, trial_id: int, token: str, lease_s: float) -> tuple[ClaimOutcome, Any]:
        """A claimant's heartbeat, fenced by its token: (outcome, row)."""

    def report_external(self, study_id: str, trial_id: int, token: str, epoch: int, row: dict[str, Any],
                        metric: str, lease_s: float) -> tuple[ClaimOutcome, Any]:
        """A claimant's per-epoch report, fenced by its token: (outcome, row)."""

    def finish_external(self, study_id: str, trial_id: int, token: str, status: str, *,
                        metrics: dict[str, Any] | None = None, metric: str | None = None,
                        error: str | None = None) -> tuple[ClaimOutcome, str | None]:
        """Ends a claimed trial, fenced by its token: (outcome, status)."""

    def rung_values_of_others(self, study_id: str, optimizer: str, stage: int, epoch: int, metric: str,
                              trial_id: int) -> list[float]:
        """`rung_values` without one trial's own report."""

    # ------------------------------------------------------------------ the cluster record (api; runner: fenced)
    def record_cluster(self, **values: Any) -> None:
        """What the runner sees of the Ray cluster."""

    def cluster(self) -> dict[str, Any]:
        """The runner's last record of the cluster."""

    # ------------------------------------------------------------------ what the followers read
    def watched_study_ids(self, recent_s: float = 3600.0) -> set[str]:
        """Active studies and those that ended lately."""

    def last_report_id(self) -> int:
        """The newest report row's id (a follower's cursor)."""

    def reports_after(self, cursor: int, limit: int = 5000) -> list[ReportRow]:
        """(report id, trial id, epoch, row, study id) after `cursor`, oldest first."""

    def trial_progress(self, study_id: str) -> list[TrialProgress]:
        """(id, status, epochs) of the study's started trials."""

    def trials_by_id(self, ids: list[int]) -> list[Trial]:
        """Trial rows by id."""

    def optimizer_gauges(self, study_id: str, mode: str) -> tuple[list[OptimizerGauge], dict[str, float]]:
        """(optimizer, status, trials, epochs) rows and each optimizer's best objective."""


class RunnerCalls(Protocol):
    """What the runner and its parts (dispatch, stages, samplers, the cluster recorder, the Tune
    callback) may call: the calls of `Store` marked "runner" above. `RunnerStore` implements
    exactly these; a new call the runner needs is added here and there."""

    # studies
    get_study = Store.get_study
    studies_with_status = Store.studies_with_status
    set_status = Store.set_status
    save_stage_space = Store.save_stage_space
    # trials
    ensure_trials = Store.ensure_trials
    claim_pending = Store.claim_pending
    release_trial = Store.release_trial
    reset_interrupted = Store.reset_interrupted
    mark_started = Store.mark_started
    record_result = Store.record_result
    set_checkpoint = Store.set_checkpoint
    mark_stopped = Store.mark_stopped
    set_config = Store.set_config
    mark_failed = Store.mark_failed
    count_attempt = Store.count_attempt
    trial_dicts = Store.trial_dicts
    trials = Store.trials
    trial = Store.trial
    count_trials = Store.count_trials
    # reports, ranking, the cluster record
    rung_values = Store.rung_values
    best_trials = Store.best_trials
    record_cluster = Store.record_cluster
