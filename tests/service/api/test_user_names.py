"""Issue 30, item 5: user names compare case-insensitively. New names are stored folded; migration
0014 folds the stored ones and refuses (naming them) when two existing users would become one."""

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from service.api.auth import create_token, revoke_tokens
from service.app import create_app
from service.cli.preflight import ConfigError, check_database
from service.settings import Settings
from service.store.engine import MigrationRefused, make_engine
from service.store.study_store import StudyStore
from tests.service.api.test_external_trials import SPEC
from tests.service.api.test_security import _migrate
from tests.service.conftest import bearer


def _insert_token(conn, user: str, digest: str) -> None:
    conn.execute(sa.text('INSERT INTO rf_tokens ("user", admin, token_hash, created_at) '
                         "VALUES (:u, false, :h, :t)"), {"u": user, "h": digest, "t": "2026-01-01 00:00:00+00:00"})


def test_names_differing_in_case_are_one_user(tmp_path):
    db = f"sqlite:///{tmp_path / 'u.db'}"
    store = StudyStore(db)
    upper, _ = create_token(store.engine, "Dave")
    lower, _ = create_token(store.engine, "dave")
    app = create_app(Settings(database_url=db, start_runner=False))
    with TestClient(app) as c:
        sid = c.post("/studies", json={**SPEC, "name": "mine"}, headers=bearer(upper)).json()["id"]
        assert c.get(f"/studies/{sid}", headers=bearer(lower)).status_code == 200  # the same user
        # revoking `dave` revokes `Dave`'s token too
        assert revoke_tokens(store.engine, user="DAVE") == 2
        c.app.state.tokens._entries.clear()  # past the token cache
        assert c.get(f"/studies/{sid}", headers=bearer(upper)).status_code == 401
    assert store.get_study(sid).owner == "dave"
    store.engine.dispose()


def test_migration_folds_stored_names(db_url):
    _migrate(db_url, command.upgrade, "0013")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        _insert_token(conn, "Erin", "h1")
        conn.execute(sa.text("INSERT INTO rf_studies (id, name, status, spec, stage_spaces, notes, owner, "
                             "created_at, updated_at) VALUES ('s1', 'n', 'completed', '{}', '{}', '[]', 'Erin', "
                             ":t, :t)"), {"t": "2026-01-01 00:00:00+00:00"})
    engine.dispose()
    store = StudyStore(db_url)
    with store.session() as s:
        assert s.execute(sa.text('SELECT "user" FROM rf_tokens')).scalars().all() == ["erin"]
    assert store.get_study("s1").owner == "erin"
    store.engine.dispose()


def test_migration_refuses_users_that_would_collide_and_names_them(db_url):
    _migrate(db_url, command.upgrade, "0013")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        _insert_token(conn, "Alice", "h1")
        _insert_token(conn, "alice", "h2")
        _insert_token(conn, "Bob", "h3")
    engine.dispose()
    with pytest.raises(MigrationRefused, match="'Alice' and 'alice'") as e:
        StudyStore(db_url)
    assert "Bob" not in str(e.value)
    with pytest.raises(ConfigError, match="'Alice' and 'alice'"):  # `rootfree serve` says it and exits 2
        check_database(db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:  # nothing changed
        assert sorted(conn.execute(sa.text('SELECT "user" FROM rf_tokens')).scalars()) == ["Alice", "Bob", "alice"]
    engine.dispose()


@pytest.mark.parametrize("name", ["\u017fam", "\u212aate", "\u0130van"])  # long s, Kelvin sign, dotted I
def test_a_non_ascii_name_that_folds_into_ascii_is_refused_not_merged_into_another_user(tmp_path, name):
    """casefold maps some non-ASCII letters onto ASCII ones (U+017F -> s, U+212A -> k): the name is
    checked as typed, so `ſam` is refused rather than silently becoming the existing user `sam`."""
    store = StudyStore(f"sqlite:///{tmp_path / 'u.db'}")
    with pytest.raises(ValueError, match="a user name is"):
        create_token(store.engine, name)
    assert store.engine.connect().execute(sa.text("SELECT count(*) FROM rf_tokens")).scalar() == 0
    store.engine.dispose()
