import uuid

import pytest
import sqlalchemy as sa

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    name = f"rootfree_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    return request.getfixturevalue("pg_url")


def make_token(db_url: str, user: str = "alice", admin: bool = True) -> str:
    """A real API token in the study database (migrated first), as `rootfree token create` makes."""
    from service.api.auth import create_token
    from service.store.study_store import StudyStore

    store = StudyStore(db_url)
    token, _ = create_token(store.engine, user, admin=admin, actor="test")
    store.engine.dispose()
    return token


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


class Spy:
    """A TestClient as a `service.client.Client`'s transport (`http=`) that calls
    `before(method, path, params)` ahead of each request: a test acts between the CLI's calls."""

    def __init__(self, http, before=lambda method, path, params: None):
        self.http, self.before = http, before

    def request(self, method, path, **kwargs):
        self.before(method, path, kwargs.get("params"))
        return self.http.request(method, path, **kwargs)

    def close(self):
        pass  # the test's TestClient outlives the client
