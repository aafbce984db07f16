"""The SQL study store: the repository the API and the runner use. SQLite (WAL mode) by default,
any SQLAlchemy URL (PostgreSQL) through one setting.

Every reported trial result is committed as it arrives, so nothing a worker reported is lost when
a process dies. The runner's Optuna view (service/followers/optuna_view.py) mirrors the studies into Optuna
studies in the same database (Optuna's RDBStorage), named ``<study name>/<optimizer>``, so
``optuna-dashboard <url>`` shows them live with Optuna's plots and parameter importances.

`StudyStore` is one facade (as Optuna's RDBStorage is one over its tables) composed by delegation
of one repository per table group: studies.py, suites.py, trials.py, ranking.py, reports.py,
claims.py (external trials), cluster.py, follow.py; each call of the facade is the call of one
repository (`PARTS` says which). engine.py makes the engine and runs the migrations, locks.py
holds the admission and claim locks, runner_store.py the runner's lease-fenced, retried view.
What the other layers may call is listed in interface.py (`Store`, `RunnerCalls`). Every name
this module exported before the split is still importable from it (the store's parts never
import it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from service.domain.statuses import ACTIVE, FINISHED, RESULTS, TERMINAL
from service.store.claims import ClaimsRepository
from service.store.cluster import ClusterRepository
from service.store.engine import MIGRATIONS, StoreBase, StoreUnavailable, make_engine, migrate, now, transient
from service.store.follow import FollowRepository
from service.store.locks import ADMISSION_LOCK, CLAIM_LOCK, QuotaExceeded, active_studies, lock_owner, lock_study_claims
from service.store.models import AuditEntry, ClusterRecord, Report, Study, Suite, Trial
from service.store.optuna_mirror import OptunaView
from service.store.ranking import RankingRepository
from service.store.reports import ReportsRepository
from service.store.runner_store import RunnerStore, log
from service.store.studies import StudiesRepository
from service.store.suites import SuitesRepository
from service.store.trials import TrialsRepository

__all__ = [
    "ACTIVE", "ADMISSION_LOCK", "CLAIM_LOCK", "FINISHED", "MIGRATIONS", "RESULTS", "TERMINAL",
    "AuditEntry", "ClusterRecord", "QuotaExceeded", "Report", "RunnerStore", "StoreBase", "StoreUnavailable",
    "Study", "StudyStore", "Suite", "Trial", "active_studies", "lock_owner", "lock_study_claims", "make_engine",
    "log", "migrate", "now", "transient",
]


# The repositories, one per table group: the facade's calls are theirs (a call's name is unique
# across them). A new table group is one more entry; a new call of one is found on its own.
PARTS: dict[str, type[StoreBase]] = {
    "studies": StudiesRepository, "suites": SuitesRepository, "trials": TrialsRepository,
    "ranking": RankingRepository, "reports": ReportsRepository, "claims": ClaimsRepository,
    "cluster": ClusterRepository, "follow": FollowRepository,
}


class StudyStore(StoreBase):
    """The SQL store (service/store/interface.py `Store`): the facade over `PARTS`."""

    def __init__(self, url: str):
        engine = make_engine(url)
        migrate(engine)
        self._compose(url, engine, sessionmaker(engine, expire_on_commit=False))

    def _compose(self, url: str, engine, sessions: sessionmaker) -> None:
        super().__init__(url, engine, sessions)
        self.parts = {name: part(url, engine, sessions) for name, part in PARTS.items()}

    def with_sessions(self, sessions: sessionmaker) -> StudyStore:
        """The same store (engine, repositories) whose transactions open through `sessions`."""
        other = object.__new__(StudyStore)
        other._compose(self.url, self.engine, sessions)
        return other

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


    def delete_suite(self, suite_id: str) -> None:
        """The suite's row and each of its studies (with their trials and reports). Here, not in
        suites.py: it spans the suites' and the studies' repositories."""
        with self.session() as s:
            ids = list(s.scalars(select(Study.id).where(Study.suite_id == suite_id)))
        for sid in ids:
            self.delete_study(sid)
        with self.session() as s:
            s.execute(delete(Suite).where(Suite.id == suite_id))
            s.commit()


def _delegate(part: str, call: Callable) -> Callable:
    name = call.__name__

    @functools.wraps(call)
    def method(self: StudyStore, *args, **kwargs):
        return getattr(self.parts[part], name)(*args, **kwargs)

    return method


for _part, _repository in PARTS.items():
    for _name, _call in vars(_repository).items():
        if _name.startswith("_") or not callable(_call):
            continue
        if hasattr(StudyStore, _name):
            raise TypeError(f"StudyStore.{_name}: two repositories (or the facade) define it")
        setattr(StudyStore, _name, _delegate(_part, _call))
