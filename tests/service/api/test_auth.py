"""Tokens, ownership, the admin role, the audit trail and the secure defaults (runner off; the
CLI and `serve` as subprocesses where they are the interface)."""

import os
import stat
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.api import auth
from service.app import create_app
from service.settings import Settings
from service.store.study_store import StudyStore
from tests.service.conftest import bearer, make_token
from tests.support import free_port

SPEC = {"name": "mine", "workload": "noisy_quadratic", "optimizers": ["sgd"],
        "protocol": {"stages": [2], "top_k": 2}, "budget": {"epochs": 1}}


@pytest.fixture
def app(db_url, tmp_path):
    return create_app(Settings(database_url=db_url, start_runner=False, storage_path=str(tmp_path / "runs"),
                               max_active_studies=2))


@pytest.fixture
def users(app, db_url):
    tokens = {"alice": make_token(db_url, "alice", admin=False), "bob": make_token(db_url, "bob", admin=False),
              "root": make_token(db_url, "root", admin=True)}
    with TestClient(app) as c:
        yield c, {u: bearer(t) for u, t in tokens.items()}, tokens


def test_every_endpoint_but_health_and_docs_needs_a_token(users):
    c, h, _ = users
    for method, path in [("get", "/studies"), ("post", "/studies"), ("get", "/studies/x"), ("get", "/cluster"),
                         ("get", "/workloads"), ("get", "/optimizers"), ("get", "/audit"),
                         ("delete", "/studies/x"), ("post", "/studies/x/cancel")]:
        for headers in ({}, {"Authorization": "Bearer rf_wrong"}, {"Authorization": "Basic abc"}):
            r = c.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
    for path in ("/healthz", "/docs", "/openapi.json"):
        assert c.get(path).status_code == 200
    assert c.get("/workloads", headers=h["alice"]).status_code == 200


def test_another_users_study_is_404_everywhere_admin_sees_all(users, db_url):
    c, h, _ = users
    sid = c.post("/studies", json=SPEC, headers=h["alice"]).json()["id"]
    store = StudyStore(db_url)
    store.ensure_trials(sid, "sgd", 1, [{"lr": 0.1}])
    tid = store.trials(sid)[0].id
    assert c.get(f"/studies/{sid}", headers=h["alice"]).json()["owner"] == "alice"
    for method, path in [("get", ""), ("get", "/trials"), ("get", f"/trials/{tid}"), ("get", "/best"),
                         ("get", "/export"), ("get", "/logs"), ("post", "/cancel"), ("delete", "")]:
        r = c.request(method, f"/studies/{sid}{path}", headers=h["bob"])
        assert r.status_code == 404, (method, path, r.status_code)
        assert r.json() == c.request(method, f"/studies/nope{path}", headers=h["bob"]).json() | {
            "detail": f"study {sid!r} not found"}  # the same answer as a missing study
    assert c.get("/studies", headers=h["bob"]).json()["total"] == 0
    assert c.get("/studies", headers=h["alice"]).json()["total"] == 1
    # the queue shows bob where alice's study stands, not what it is
    q = c.get("/cluster", headers=h["bob"]).json()["queue"]
    assert q[0]["study_id"] == "-" and "mine" not in str(q)
    assert c.get("/cluster", headers=h["root"]).json()["queue"][0]["study_id"] == sid
    # an admin reads and acts on everyone's
    assert c.get("/studies", headers=h["root"]).json()["total"] == 1
    for path in ("", "/trials", "/best", "/export", "/logs"):
        assert c.get(f"/studies/{sid}{path}", headers=h["root"]).status_code == 200
    assert c.post(f"/studies/{sid}/cancel", headers=h["root"]).status_code == 202
    assert c.delete(f"/studies/{sid}", headers=h["root"]).status_code == 204


def test_quota_and_idempotency_are_per_user(users):
    c, h, _ = users
    for _ in range(2):
        assert c.post("/studies", json=SPEC, headers=h["alice"]).status_code == 201
    assert c.post("/studies", json=SPEC, headers=h["alice"]).status_code == 429
    assert c.post("/studies", json=SPEC, headers=h["bob"]).status_code == 201  # bob has his own quota
    key = {"Idempotency-Key": "same"}
    a = c.post("/studies", json=SPEC, headers={**h["root"], **key}).json()
    b = c.post("/studies", json=SPEC, headers={**h["bob"], **key}).json()
    assert a["id"] != b["id"] and b["owner"] == "bob"  # one user's key never returns another's study


def test_audit_trail(users, db_url):
    c, h, tokens = users
    sid = c.post("/studies", json=SPEC, headers=h["alice"]).json()["id"]
    c.post(f"/studies/{sid}/cancel", headers=h["alice"])
    c.delete(f"/studies/{sid}", headers=h["alice"])
    auth.revoke_tokens(StudyStore(db_url).engine, user="bob", actor="cli:ops")
    assert c.get("/audit", headers=h["alice"]).status_code == 403
    items = c.get("/audit", headers=h["root"]).json()["items"]
    seen = [(e["actor"], e["action"], e["target"]) for e in reversed(items)]
    assert seen[:3] == [("test", "token.create", "1"), ("test", "token.create", "2"), ("test", "token.create", "3")]
    assert seen[3:] == [("alice", "study.create", sid), ("alice", "study.cancel", sid),
                        ("alice", "study.delete", sid), ("cli:ops", "token.revoke", "2")]
    assert all(e["client"] == "testclient" for e in items if e["action"].startswith("study."))
    assert not any(t in str(items) for t in tokens.values())


def test_tokens_are_stored_hashed_and_revocation_works(users, db_url, tmp_path):
    c, h, tokens = users
    c.post("/studies", json=SPEC, headers=h["alice"])
    engine = StudyStore(db_url).engine
    with engine.connect() as conn:  # every text in every table
        dump = " ".join(str(row) for table in sa.inspect(engine).get_table_names()
                        for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')))
    for token in tokens.values():
        assert token not in dump and auth.token_hash(token) in dump
    if db_url.startswith("sqlite"):  # and not in the file's bytes either (WAL included)
        path = sa.engine.make_url(db_url).database
        raw = b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))
        assert not any(t.encode() in raw for t in tokens.values())
    assert auth.revoke_tokens(engine, user="alice") == 1
    time.sleep(auth.CACHE_S + 0.1)
    assert c.get("/studies", headers=h["alice"]).status_code == 401
    assert c.get("/studies", headers=h["bob"]).status_code == 200


def test_trusted_hosts(db_url):
    app = create_app(Settings(database_url=db_url, start_runner=False, allowed_hosts="rootfree.lab,127.0.0.1"))
    with TestClient(app, base_url="http://rootfree.lab") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"host": "evil.example"}).status_code == 400


def _cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
def test_token_cli_and_the_token_file(tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    r = _cli("token", "create", "--user", "carol", "--admin", "--save", "--db", db,
             env={"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("rf_") and len(token) >= 43  # 256 bits, url-safe base64
    saved = tmp_path / "cfg" / "rootfree" / "token"
    assert saved.read_text().strip() == token and stat.S_IMODE(saved.stat().st_mode) == 0o600
    listed = _cli("token", "list", "--db", db).stdout
    assert "carol" in listed and "yes" in listed and token not in listed
    from service.cli import token as cli_token

    monkey = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    old = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "ROOTFREE_TOKEN")}
    try:
        os.environ.update(monkey)
        os.environ.pop("ROOTFREE_TOKEN", None)
        assert cli_token.resolve_token(None) == token  # the file
        os.environ["ROOTFREE_TOKEN"] = "rf_env"
        assert cli_token.resolve_token(None) == "rf_env" and cli_token.resolve_token("rf_flag") == "rf_flag"
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert _cli("token", "revoke", "--user", "carol", "--db", db).returncode == 0
    assert "-" not in _cli("token", "list", "--db", db).stdout.splitlines()[1].split()[-1]
    assert _cli("token", "revoke", "--user", "nobody", "--db", db).returncode == 1


@pytest.mark.slow  # over ~3 s: `make test-fast` leaves it out
@pytest.mark.parametrize("env,words", [
    ({"ROOTFREE_AUTH": "none"}, ["ROOTFREE_AUTH=none", "loopback", "0.0.0.0"]),
    ({"ROOTFREE_DATABASE_URL": "postgresql://rootfree:change-me@127.0.0.1:5432/test"},
     ["ROOTFREE_DATABASE_URL", "placeholder"]),
    ({"RAY_AUTH_TOKEN": "change-me"}, ["RAY_AUTH_TOKEN", "placeholder"]),
])
def test_serve_refuses_insecure_settings(tmp_path, env, words):
    env = {"ROOTFREE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", **env}
    r = _cli("serve", "--host", "0.0.0.0" if env.get("ROOTFREE_AUTH") else "127.0.0.1",
             "--port", str(free_port()), env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    for w in words:
        assert w in r.stderr
    assert "change-me" not in r.stderr  # never the secret itself


def test_passwords_never_appear_in_errors(tmp_path):
    r = _cli("migrate", "--db", "postgresql://u:s3cret-pw@127.0.0.1:1/none")
    assert r.returncode == 2 and "s3cret-pw" not in r.stderr + r.stdout and "***" in r.stderr
