"""The SQL study store: the repository the API and the runner use. SQLite (WAL mode) by default,
any SQLAlchemy URL (PostgreSQL) through one setting.

Every reported trial result is committed as it arrives, so nothing a worker reported is lost when
a process dies. The runner's Optuna view (service/followers/optuna_view.py) mirrors the studies into Optuna
studies in the same database (Optuna's RDBStorage), named ``<study name>/<optimizer>``, so
``optuna-dashboard <url>`` shows them live with Optuna's plots and parameter importances.

`StudyStore` is one class composed of one part per concern (as Optuna's RDBStorage is one facade
over its tables): studies.py, suites.py, trials.py, ranking.py, reports.py, claims.py (external
trials), cluster.py; engine.py makes the engine and runs the migrations, locks.py holds the
admission and claim locks, runner_store.py the runner's lease-fenced, retried view. What the
other layers may call is listed in interface.py (`Store`, `RunnerCalls`). Every name this module
exported before the split is still importable from it (the store's parts never import it).
"""

from __future__ import annotations

from sqlalchemy.orm import sessionmaker

from service.statuses import ACTIVE, FINISHED, RESULTS, TERMINAL
from service.store.claims import ClaimsMixin
from service.store.cluster import ClusterMixin
from service.store.engine import MIGRATIONS, StoreBase, StoreUnavailable, make_engine, migrate, now, transient
from service.store.follow import FollowMixin
from service.store.locks import ADMISSION_LOCK, CLAIM_LOCK, QuotaExceeded, active_studies, lock_owner, lock_study_claims
from service.store.models import AuditEntry, ClusterRecord, Report, Study, Suite, Trial
from service.store.optuna_mirror import OptunaView
from service.store.ranking import RankingMixin
from service.store.reports import ReportsMixin
from service.store.runner_store import RunnerStore, log
from service.store.studies import StudiesMixin
from service.store.suites import SuitesMixin
from service.store.trials import TrialsMixin

__all__ = [
    "ACTIVE", "ADMISSION_LOCK", "CLAIM_LOCK", "FINISHED", "MIGRATIONS", "RESULTS", "TERMINAL",
    "AuditEntry", "ClusterRecord", "QuotaExceeded", "Report", "RunnerStore", "StoreBase", "StoreUnavailable",
    "Study", "StudyStore", "Suite", "Trial", "active_studies", "lock_owner", "lock_study_claims", "make_engine",
    "log", "migrate", "now", "transient",
]


class StudyStore(StudiesMixin, SuitesMixin, TrialsMixin, RankingMixin, ReportsMixin, ClaimsMixin, ClusterMixin,
                 FollowMixin):
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def delete_optuna_studies(self, study_id: str) -> int:
        """Removes the study's Optuna views (service/followers/optuna_view.py, and the per-stage
        ones of before). Here, not in studies.py: the mirror reads the store through its
        interface, and the study rows' SQL needs nothing of the mirror."""
        view = OptunaView(self)
        try:
            return view.delete(study_id)
        except Exception:  # noqa: BLE001 - no Optuna tables yet: nothing to remove
            return 0
        finally:
            view.close()
