"""The persistence layer: every SQL statement of the service (studies, trials, reports, suites,
the cluster record, tokens, the audit trail, the runner lease), the models, the migrations and the
files on disk. The public API, re-exported here; the submodules import each other directly, never
through this package."""

from service.store.engine import StoreUnavailable, make_engine
from service.store.locks import QuotaExceeded
from service.store.runner_store import RunnerStore
from service.store.study_store import StudyStore

__all__ = ["QuotaExceeded", "RunnerStore", "StoreUnavailable", "StudyStore", "make_engine"]
