"""The study use-cases the routers call (they parse, call one of these, shape the answer): submit,
cancel and delete, each the whole sequence of what admitting, ending or removing a study involves —
the admission checks and the quota, the status, the external claims, the samplers' state, the audit
trail, the files and the Optuna views. No HTTP here: a refusal is a `Refused`
(service/domain/refusals.py; `StudyConflict` is the api's 409), which the api answers."""

from __future__ import annotations

import logging
from typing import Any

from service.control.admission import admit
from service.control.external import ExternalSamplers
from service.domain.refusals import Conflict, OverQuota
from service.domain.spec import ResolvedSpec
from service.domain.statuses import ACTIVE, TERMINAL
from service.settings import Settings
from service.store.audit import append as audit
from service.store.files import remove_study_files
from service.store.interface import Store
from service.store.locks import QuotaExceeded
from service.store.models import Study

log = logging.getLogger("rootfree.studies")


class StudyConflict(Conflict):
    """The study's state refuses the action (already ended; still running)."""

    def __init__(self, message: str):
        super().__init__(None, message)


def submit_study(store: Store, settings: Settings, spec: ResolvedSpec, idempotency_key: str | None,
                 owner: str | None, audit_entry: dict[str, Any]) -> tuple[Study, bool]:
    """Admits and stores a study: (the study, whether it was created; False: the idempotency key
    returned an earlier one). `InvalidField` when the cluster could not run it or it plans too
    many trials, `OverQuota` when the owner has `max_active_studies` active ones."""
    admit(store, settings, spec)
    try:  # the quota is counted in the insert's transaction, under a per-user lock (no race)
        return store.create_study(spec, idempotency_key, owner=owner, audit=audit_entry,
                                  max_active=settings.max_active_studies)
    except QuotaExceeded as e:
        raise OverQuota("max_active_studies", f"{e.active} of your studies are queued or running, the limit is "
                                              f"{e.limit} (ROOTFREE_MAX_ACTIVE_STUDIES); "
                                              "wait for one to end or cancel one") from None


def cancel_study(store: Store, study: Study, actor: str, client: str | None, samplers: ExternalSamplers) -> bool:
    """Cancels a queued or running study: its external claims end at once (their later calls
    answer 410) and its samplers' state goes. False: it ended meanwhile (nothing changed)."""
    if study.status in TERMINAL:
        raise StudyConflict(f"study {study.id!r} is already {study.status}")
    if not store.set_status(study.id, "cancelled", only_from=ACTIVE):
        return False
    audit(store.engine, actor, "study.cancel", study.id, client)
    if study.resolved.external:
        store.end_claims(study.id, "stopped: the study was cancelled")
    samplers.forget(study.id)
    return True


def delete_study(store: Store, study: Study, actor: str, client: str | None, storage_path: str,
                 samplers: ExternalSamplers) -> None:
    """Deletes an ended study: its rows first, then what lives beside them (checkpoints and
    results under the storage path, the study log, the Optuna views), so a failure there never
    resurrects a study. The audit entry records the owner: a claimant's late call on the deleted
    study answers 410."""
    if study.status in ("running", "queued"):
        raise StudyConflict(f"study {study.id!r} is {study.status}; cancel it first")
    store.delete_study(study.id)
    after_delete(store, study, actor, client, storage_path, samplers)


def after_delete(store: Store, study: Study, actor: str, client: str | None, storage_path: str,
                 samplers: ExternalSamplers) -> None:
    """What follows the deletion of a study's rows (a study's DELETE, a target set's): its
    samplers' state, the audit entry (with the owner), the files and the Optuna views."""
    samplers.forget(study.id)
    audit(store.engine, actor, "study.delete", study.id, client, {"name": study.name, "owner": study.owner})
    remove_study_files(storage_path, study.id)
    try:
        store.delete_optuna_studies(study.id)
    except Exception:  # noqa: BLE001 - a stray Optuna view is harmless; the study is gone
        log.warning("could not remove the Optuna views of study %s", study.id, exc_info=True)
