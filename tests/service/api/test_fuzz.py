"""Schemathesis fuzzes every operation of the OpenAPI schema (runner off, SQLite): whatever the
generated path, query, header or body, the API answers with a client error or success, never 5xx."""

import atexit
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import bearer, make_token

_tmp = tempfile.mkdtemp(prefix="rootfree-fuzz-")
_db = f"sqlite:///{Path(_tmp) / 'fuzz.db'}"
app = create_app(Settings(database_url=_db, start_runner=False, storage_path=str(Path(_tmp) / "runs")))
_auth = bearer(make_token(_db, "fuzzer", admin=True))
_client = TestClient(app, headers=_auth)
_client.__enter__()  # runs the lifespan once: the store is on app.state for every case
atexit.register(_client.__exit__, None, None, None)
# one real study, so that /studies/{id}/... paths can hit an existing id too
_sid = _client.post("/studies", json={"name": "fuzz", "workload": "noisy_quadratic", "optimizers": ["sgd"],
                                      "protocol": {"stages": [2], "top_k": 2}}).json()["id"]

schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    if "study_id" in (case.path_parameters or {}) and hash(str(case.path_parameters)) % 2:
        case.path_parameters["study_id"] = _sid
    response = case.call(headers={**(case.headers or {}), **_auth})
    assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body,
                                        response.status_code, response.text[:500])
