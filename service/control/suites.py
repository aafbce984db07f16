"""The submissions of several studies at once (the use-cases the suites' and target sets'
routers call): every study admitted as a study is (service/control/admission.py), then the suite
row and its studies stored in one transaction that counts the owner's quota. No HTTP here: a
refusal is a `Refused` (service/domain/refusals.py), which the api answers."""

from __future__ import annotations

import hashlib
from typing import Any

from service.control.admission import admit
from service.domain.refusals import Conflict, InvalidField, OverQuota
from service.domain.spec import TARGET_SET_KIND, ResolvedSpec
from service.settings import Settings
from service.store.interface import Store
from service.store.locks import QuotaExceeded
from service.store.models import Suite


def submit_suite(store: Store, settings: Settings, suite_spec: dict[str, Any], study_specs: list[ResolvedSpec],
                 idempotency_key: str | None, owner: str | None, audit_entry: dict[str, Any]) -> tuple[Suite, bool]:
    """Admits and stores a suite: (the suite, whether it was created; False: the idempotency key
    returned an earlier one). A study's refusal names its entry (`workloads[i].name`,
    `workloads[i].trials`); a key that returned a target set is a `Conflict`."""
    for i, s in enumerate(study_specs):
        try:
            admit(store, settings, s)
        except InvalidField as e:
            if e.field in ("trials", "workload"):
                field = f"workloads[{i}].{'name' if e.field == 'workload' else e.field}"
                raise InvalidField(field, e.message) from None
            raise
    suite, created = _create(store, settings, suite_spec, study_specs, idempotency_key, owner, audit_entry,
                             "the suite")
    if not created and suite.spec.get("kind") == TARGET_SET_KIND:  # the keys of both kinds share one column
        raise Conflict("Idempotency-Key", "this key was used for one of your target sets "
                                          "(POST /target-sets), not a suite; send another key")
    return suite, created


def submit_target_set(store: Store, settings: Settings, stored_spec: dict[str, Any],
                      study_specs: list[ResolvedSpec], idempotency_key: str | None, owner: str | None,
                      audit_entry: dict[str, Any]) -> tuple[Suite, bool]:
    """As `submit_suite` for a target set (`stored_spec`: its suite row's spec, of kind
    `TARGET_SET_KIND`); its key is kept apart from the suites' keys (`stored_key`)."""
    for s in study_specs:
        admit(store, settings, s)
    ts, created = _create(store, settings, stored_spec, study_specs, stored_key(idempotency_key), owner,
                          audit_entry, "the target set")
    if not created and ts.spec.get("kind") != TARGET_SET_KIND:  # a suite sent with "target-set:<this key>"
        raise Conflict("Idempotency-Key", "this key was used for one of your suites, not a target set; "
                                          "send another key")
    return ts, created


def stored_key(key: str | None) -> str | None:
    """A target set's key as the suites' column keeps it: prefixed (a suite's own key never
    returns a target set), and a key the prefix would push past the column's 200 characters by
    its SHA-256."""
    if not key:
        return None
    stored = f"target-set:{key}"
    return stored if len(stored) <= 200 else f"target-set:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _create(store: Store, settings: Settings, spec: dict[str, Any], study_specs: list[ResolvedSpec],
            key: str | None, owner: str | None, audit_entry: dict[str, Any], what: str) -> tuple[Suite, bool]:
    try:  # the quota is counted in the insert's transaction, under a per-user lock (no race)
        return store.create_suite(spec, study_specs, key, owner=owner, audit=audit_entry,
                                  max_active=settings.max_active_studies)
    except QuotaExceeded as e:
        raise OverQuota("max_active_studies",
                        f"{what} adds {len(study_specs)} studies to your {e.active} queued or running ones; the "
                        f"limit is {e.limit} (ROOTFREE_MAX_ACTIVE_STUDIES)") from None
