"""Holes an outside review found (issue 19): idempotency keys per (owner, key) pair, user names,
ownership checks with any name, atomic admission under the per-user quota (runner off)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import subprocess
import sys
import threading

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient

from service.api.auth import create_token, list_tokens, new_token, token_hash
from service.app import create_app
from service.settings import Settings
from service.store.models import ApiToken
from service.store.study_store import MIGRATIONS, StudyStore, make_engine
from tests.service.conftest import bearer, make_token
from tests.support import free_port, wait_healthy

SPEC = {"name": "mine", "workload": "noisy_quadratic", "optimizers": ["sgd"],
        "protocol": {"stages": [2], "top_k": 2}, "budget": {"epochs": 1}}


def raw_token(db_url: str, user: str, admin: bool = False) -> str:
    """A token for a user name `token create` no longer accepts (an old store may hold one)."""
    store = StudyStore(db_url)
    token = new_token()
    with store.session() as s:
        s.add(ApiToken(user=user, admin=admin, token_hash=token_hash(token)))
        s.commit()
    store.engine.dispose()
    return token


@pytest.fixture
def client(db_url, tmp_path):
    app = create_app(Settings(database_url=db_url, start_runner=False, storage_path=str(tmp_path / "runs")))
    with TestClient(app) as c:
        yield c


def test_an_idempotency_key_never_returns_another_users_study(client, db_url):
    alice = bearer(make_token(db_url, "alice", admin=False))
    colon = bearer(raw_token(db_url, "alice:bob"))  # joined, "alice" + "bob:k1" == "alice:bob" + "k1"
    a = client.post("/studies", json=SPEC, headers={**alice, "Idempotency-Key": "bob:k1"})
    assert a.status_code == 201
    b = client.post("/studies", json={**SPEC, "name": "other"}, headers={**colon, "Idempotency-Key": "k1"})
    assert b.status_code == 201, b.text
    assert b.json()["id"] != a.json()["id"] and b.json()["owner"] == "alice:bob" and b.json()["name"] == "other"
    again = client.post("/studies", json=SPEC, headers={**colon, "Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json()["id"] == b.json()["id"]


def test_the_pair_lookup_in_the_store(db_url):
    store = StudyStore(db_url)
    spec = {**SPEC, "name": "x"}
    a, created = store.create_study(spec, "bob:k1", owner="alice")
    b, created_b = store.create_study(spec, "k1", owner="alice:bob")
    c, created_c = store.create_study(spec, "k1", owner=None)
    assert created and created_b and created_c and len({a.id, b.id, c.id}) == 3
    for study, key, owner in ((a, "bob:k1", "alice"), (b, "k1", "alice:bob"), (c, "k1", None)):
        again, created = store.create_study(spec, key, owner=owner)
        assert again.id == study.id and not created
    store.engine.dispose()


def test_the_idempotency_key_is_bounded_and_a_long_one_is_stored_whole(client, db_url):
    h = bearer(make_token(db_url, "a-rather-long.user@example.org", admin=False))
    key = "k" * 200  # with the owner joined in front it overflowed the column on PostgreSQL: a 500
    first = client.post("/studies", json=SPEC, headers={**h, "Idempotency-Key": key})
    assert first.status_code == 201, first.text
    assert client.post("/studies", json=SPEC, headers={**h, "Idempotency-Key": key}).json()["id"] == first.json()["id"]
    r = client.post("/studies", json=SPEC, headers={**h, "Idempotency-Key": key + "k"})
    assert r.status_code == 422 and "idempotency-key" in r.json()["detail"].lower()
    assert "200" in r.json()["detail"]
    assert client.get("/studies", headers=h).json()["total"] == 1  # nothing stored


def _migrate(db_url: str, how, revision: str) -> None:
    engine = make_engine(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        how(cfg, revision)
        conn.commit()
    engine.dispose()


def test_migration_0009_keeps_the_meaning_of_old_keys(db_url):
    _migrate(db_url, command.upgrade, "0008")
    engine = make_engine(db_url)
    rows = [("s1", "alice", "alice:bob:k1"), ("s2", "alice:bob", "alice:bob:k2"), ("s3", None, ":k3"),
            ("s4", "carol", None)]
    with engine.begin() as conn:
        for sid, owner, key in rows:
            conn.execute(sa.text("INSERT INTO rf_studies (id, name, status, spec, stage_spaces, notes, "
                                 "idempotency_key, owner, created_at, updated_at) VALUES (:id, 'n', 'completed', "
                                 "'{}', '{}', '[]', :key, :owner, :t, :t)"),
                         {"id": sid, "key": key, "owner": owner, "t": "2026-01-01 00:00:00+00:00"})
        conn.execute(sa.text("INSERT INTO rf_trials (study_id, optimizer, stage, \"index\", config, status, metrics, "
                             "runs, epochs) VALUES ('s1', 'sgd', 1, 0, '{}', 'completed', '{}', 1, 1)"))
    engine.dispose()
    store = StudyStore(db_url)  # migrates to the head
    assert len(store.trials("s1")) == 1  # nothing cascades away with the schema change
    got = {s.id: (s.owner, s.idempotency_key) for s in store.list_studies(None, 10, 0)[0]}
    assert got == {"s1": ("alice", "bob:k1"), "s2": ("alice:bob", "k2"), "s3": (None, "k3"), "s4": ("carol", None)}
    spec = {**SPEC, "name": "x"}
    assert store.create_study(spec, "bob:k1", owner="alice")[0].id == "s1"  # an old key still answers
    assert store.create_study(spec, "k1", owner="alice:bob")[1] is True  # and no longer collides
    with pytest.raises(sa.exc.IntegrityError):  # the pair is unique in the schema, not only in the code
        with store.session() as s:
            s.execute(sa.text("UPDATE rf_studies SET idempotency_key = 'k2', owner = 'alice:bob' WHERE id = 's4'"))
            s.commit()
    store.engine.dispose()


@pytest.mark.parametrize("name", ["alice:bob", "jöhn", "a b", "", "x" * 65, "tab\tname", "[bold]", "a/b"])
def test_token_create_refuses_user_names_outside_the_documented_set(tmp_path, name):
    store = StudyStore(f"sqlite:///{tmp_path / 'u.db'}")
    with pytest.raises(ValueError, match=r"A-Z a-z 0-9 \. _ @ -"):
        create_token(store.engine, name)
    assert list_tokens(store.engine) == []


@pytest.mark.parametrize("name", ["alice", "carol@lab.example", "a.b_c-D9", "x" * 64])
def test_token_create_accepts_the_documented_set(tmp_path, name):
    store = StudyStore(f"sqlite:///{tmp_path / 'u.db'}")
    create_token(store.engine, name)
    assert [t.user for t in list_tokens(store.engine)] == [name.lower()]  # stored folded (issue 30)


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
def test_the_token_cli_names_the_allowed_characters(tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    r = subprocess.run([sys.executable, "-m", "service.cli", "token", "create", "--user", "alice:bob", "--db", db],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "rf_" not in r.stdout
    assert "alice:bob" in r.stderr and "A-Z a-z 0-9 . _ @ -" in r.stderr and "Traceback" not in r.stderr
    assert list_tokens(StudyStore(db).engine) == []


STUDY_READS = ["", "/trials", "/trials/{tid}", "/best", "/export", "/export?format=yaml", "/logs", "/analysis",
               "/report"]


def test_a_non_ascii_user_name_works_on_every_study_endpoint_and_the_cluster(client, db_url):
    jo = bearer(raw_token(db_url, "jöhn"))  # an old store may hold such a name
    alice = bearer(make_token(db_url, "alice", admin=False))
    mine = client.post("/studies", json=SPEC, headers=jo)
    assert mine.status_code == 201 and mine.json()["owner"] == "jöhn"
    sid = mine.json()["id"]
    other = client.post("/studies", json=SPEC, headers=alice).json()["id"]
    store = StudyStore(db_url)
    store.ensure_trials(sid, "sgd", 1, [{"lr": 0.1}])
    store.ensure_trials(other, "sgd", 1, [{"lr": 0.1}])
    tid, other_tid = store.trials(sid)[0].id, store.trials(other)[0].id
    store.engine.dispose()

    def same_as_missing(headers, study_id, trial_id, method, path):
        r = client.request(method, f"/studies/{study_id}{path.format(tid=trial_id)}", headers=headers)
        missing = client.request(method, f"/studies/nope{path.format(tid=trial_id)}", headers=headers)
        assert r.status_code == missing.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json() == {"detail": f"study {study_id!r} not found"}

    # the queue, with his study active: for him, for another user, for an admin
    for h in (jo, alice):
        r = client.get("/cluster", headers=h)
        assert r.status_code == 200, r.text
    ids = [e["study_id"] for e in client.get("/cluster", headers=jo).json()["queue"]]
    assert sid in ids and other not in ids
    for path in STUDY_READS:
        r = client.get(f"/studies/{sid}{path.format(tid=tid)}", headers=jo)
        assert r.status_code == 200, (path, r.status_code, r.text)
        same_as_missing(jo, other, other_tid, "get", path)  # another user's: like a random id
        same_as_missing(alice, sid, tid, "get", path)
    assert client.get("/report", params={"study_id": sid}, headers=jo).status_code == 200
    for h, study_id in ((jo, other), (alice, sid)):
        r = client.get("/report", params={"study_id": study_id}, headers=h)
        missing = client.get("/report", params={"study_id": "nope"}, headers=h)
        assert r.status_code == missing.status_code == 404 and r.json() == {"detail": f"study {study_id!r} not found"}
    assert [s["id"] for s in client.get("/studies", headers=jo).json()["items"]] == [sid]
    for method, path in (("post", "/cancel"), ("delete", "")):
        same_as_missing(jo, other, other_tid, method, path)
        same_as_missing(alice, sid, tid, method, path)
    assert client.post(f"/studies/{sid}/cancel", headers=jo).status_code == 202
    assert client.delete(f"/studies/{sid}", headers=jo).status_code == 204
    assert client.get(f"/studies/{other}", headers=alice).status_code == 200  # alice's untouched


@contextlib.contextmanager
def uvicorn_server(app):
    """The app on a real uvicorn server (a thread): requests run concurrently in its thread pool."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(url, alive=thread.is_alive)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_parallel_posts_never_pass_the_active_study_quota(db_url, tmp_path):
    app = create_app(Settings(database_url=db_url, start_runner=False, storage_path=str(tmp_path / "runs"),
                              max_active_studies=3))
    h = bearer(make_token(db_url, "alice", admin=False))
    other = bearer(make_token(db_url, "bob", admin=False))
    n = 20
    start = threading.Barrier(n)

    def post(i: int) -> int:
        with httpx.Client(timeout=120) as c:
            start.wait()  # all at once
            return c.post(f"{url}/studies", json={**SPEC, "name": f"s{i}"}, headers=h).status_code

    with uvicorn_server(app) as url, concurrent.futures.ThreadPoolExecutor(n) as pool:
        codes = list(pool.map(post, range(n)))
        assert sorted(codes) == [201] * 3 + [429] * (n - 3), codes
        assert httpx.get(f"{url}/studies", headers=h).json()["total"] == 3
        assert httpx.post(f"{url}/studies", json=SPEC, headers=other).status_code == 201  # per user


class _DeadRunner:
    """A supervisor whose runner died with an error naming the database host and user."""

    holder, pid, restarts = "ctl-host:4242", 4243, 3
    last_error = "OperationalError: connection to server at db.internal (10.0.0.7), user rootfree failed"

    def alive(self) -> bool:
        return False


def test_healthz_tells_anonymous_callers_only_the_status_and_the_failing_parts(client, db_url):
    admin = bearer(make_token(db_url, "ops", admin=True))
    user = bearer(make_token(db_url, "alice", admin=False))
    assert client.get("/healthz").json() == {"status": "ok"}
    full = client.get("/healthz", headers=admin).json()
    assert full["database"] == "ok" and full["runner"]["role"] == "off" and "ray" in full
    client.app.state.supervisor = _DeadRunner()
    try:
        for headers in ({}, user, {"Authorization": "Bearer rf_wrong"}):  # never a 401: probes have no token
            r = client.get("/healthz", headers=headers)
            assert r.status_code == 503 and r.json() == {"status": "unavailable", "failing": ["runner"]}, r.text
            assert "4242" not in r.text and "db.internal" not in r.text
        r = client.get("/healthz", headers=admin)
        assert r.status_code == 503 and r.json()["failing"] == ["runner"]
        assert r.json()["runner"] | {"lease_expires_at": None} == {
            "role": "dead", "pid": 4243, "restarts": 3, "lease_expires_at": None, "leader": None,
            "last_error": _DeadRunner.last_error}
    finally:
        client.app.state.supervisor = None


def test_migration_0009_goes_back_dropping_only_keys_the_old_form_cannot_hold(db_url):
    store = StudyStore(db_url)
    spec = {**SPEC, "name": "x"}
    a = store.create_study(spec, "bob:k1", owner="alice")[0].id
    b = store.create_study(spec, "k1", owner="alice:bob")[0].id  # joins to alice's string
    c = store.create_study(spec, "k" * 200, owner="carol")[0].id  # joined: over 200 characters
    d = store.create_study(spec, "k2", owner="dave")[0].id
    store.ensure_trials(a, "sgd", 1, [{"lr": 0.1}])
    store.engine.dispose()
    _migrate(db_url, command.downgrade, "0008")
    engine = make_engine(db_url)
    with engine.connect() as conn:
        got = dict(conn.execute(sa.text("SELECT id, idempotency_key FROM rf_studies")).all())
    engine.dispose()
    assert got == {a: "alice:bob:k1", b: None, c: None, d: "dave:k2"}
    store = StudyStore(db_url)  # and up again
    assert store.create_study(spec, "k2", owner="dave")[0].id == d
    assert store.create_study(spec, "bob:k1", owner="alice")[0].id == a
    assert len(store.trials(a)) == 1
    store.engine.dispose()


def test_healthz_shows_an_admin_the_details_while_the_database_is_down(client, db_url, monkeypatch):
    admin = bearer(make_token(db_url, "ops", admin=True))
    assert client.get("/healthz", headers=admin).json()["database"] == "ok"  # the token is verified once
    store, tokens = client.app.state.store, client.app.state.tokens
    down = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone")  # nothing listens

    def unreachable(*_args, **_kwargs):
        with down.connect():
            pass

    monkeypatch.setattr(store, "count_studies", unreachable)
    monkeypatch.setattr(tokens, "engine", down)
    monkeypatch.setattr(tokens, "ttl_s", 0.0)  # every lookup goes to the (unreachable) database
    r = client.get("/healthz", headers=admin)
    assert r.status_code == 503 and r.json()["failing"] == ["database"], r.text
    assert r.json()["database"].startswith("unreachable")
    anonymous = client.get("/healthz")
    assert anonymous.status_code == 503 and anonymous.json() == {"status": "unavailable", "failing": ["database"]}
