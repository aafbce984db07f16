"""The `rootfree` commands that talk to a running service, in this process against the real app
(runner off): each builds one `service.client.Client` (`cli.connect`, here over FastAPI's
TestClient with the command's --token), and an error answer ends the command with
`error STATUS: DETAIL` (stderr, exit code 1) as before they shared that client."""

import argparse
import json

import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli import commands as cli
from service.cli.token import resolve_token
from service.client import Client
from service.settings import Settings
from tests.service.conftest import bearer, make_token
from tests.service.store.test_study_log import SPEC


@pytest.fixture
def rootfree(tmp_path, monkeypatch):
    """`rootfree(*argv)` runs the command against the app; `.admin`, `.alice`: tokens."""
    db_url = f"sqlite:///{tmp_path / 's.db'}"
    app = create_app(Settings(database_url=db_url, start_runner=False, storage_path=str(tmp_path / "runs")))
    admin, alice = make_token(db_url, "root", admin=True), make_token(db_url, "alice", admin=False)

    def connect(args):
        token = resolve_token(args.token)
        return Client(args.url, token, http=TestClient(app, base_url=args.url, headers=bearer(token) if token else {}))

    monkeypatch.setattr(cli, "connect", connect)
    monkeypatch.delenv("ROOTFREE_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))  # no token file

    def run(*argv: str) -> int:
        return cli.main(list(argv))

    run.admin, run.alice = admin, alice
    with TestClient(app):  # the app's lifespan, once
        yield run


def exits(run, *argv) -> str:
    """The message a command exits with (Python prints it on stderr; the exit code is 1)."""
    with pytest.raises(SystemExit) as e:
        run(*argv)
    assert isinstance(e.value.code, str), e.value.code
    return e.value.code


def submit(run, tmp_path, capsys, spec=SPEC) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert run("submit", str(path), "--token", run.alice) == 0
    return capsys.readouterr().out.strip()


def test_connect_sends_the_url_and_the_token(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("ROOTFREE_TOKEN", "rf_env")
    for flag, sent in (("rf_flag", "rf_flag"), (None, "rf_env")):
        with cli.connect(argparse.Namespace(url="http://svc:1/", token=flag)) as client:
            assert client.url == "http://svc:1" and client.http.headers["Authorization"] == f"Bearer {sent}"


def test_an_api_error_ends_every_command_with_its_status_and_detail(rootfree, tmp_path, capsys):
    missing = "study 'nope' not found"
    assert exits(rootfree, "export", "nope", "--token", rootfree.alice) == f"error 404: {missing}"
    assert exits(rootfree, "watch", "nope", "--token", rootfree.alice) == f"error 404: {missing}"
    assert exits(rootfree, "logs", "nope", "--token", rootfree.alice) == f"error 404: {missing}"
    assert exits(rootfree, "report", "nope", "-o", str(tmp_path / "r.html"),
                 "--token", rootfree.alice) == f"error 404: {missing}"
    assert exits(rootfree, "suite", "report", "nope", "--token", rootfree.alice) == "error 404: suite 'nope' not found"
    assert exits(rootfree, "audit", "--token", rootfree.alice) == "error 403: this needs an admin token"
    assert exits(rootfree, "queue").startswith("error 401: ")  # no --token, no ROOTFREE_TOKEN, no file
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "optimizers": ["nosuch"]}))
    assert exits(rootfree, "submit", str(path), "--token", rootfree.alice).startswith("error 422: ")
    assert not (tmp_path / "r.html").exists() and capsys.readouterr().out == ""


def test_export_queue_audit_and_watch(rootfree, tmp_path, capsys):
    sid = submit(rootfree, tmp_path, capsys)
    assert rootfree("export", sid, "--token", rootfree.alice) == 0
    exported = yaml.safe_load(capsys.readouterr().out)
    assert rootfree("export", sid, "--format", "json", "--token", rootfree.alice) == 0
    assert json.loads(capsys.readouterr().out) == exported
    out = tmp_path / "best.yaml"
    assert rootfree("export", sid, "--output", str(out), "--token", rootfree.alice) == 0
    assert capsys.readouterr().out == f"wrote {out}\n" and yaml.safe_load(out.read_text()) == exported

    assert rootfree("queue", "--token", rootfree.alice) == 0
    assert sid[:8] in capsys.readouterr().out

    assert rootfree("audit", "--token", rootfree.admin, "--limit", "1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["time", "actor", "action", "target", "client"] and len(lines) == 2
    assert "study.create" in lines[1] and sid in lines[1]

    with cli.connect(argparse.Namespace(url="http://testserver", token=rootfree.alice)) as client:
        client.post(f"/studies/{sid}/cancel")
    assert rootfree("watch", sid, "--interval", "0", "--token", rootfree.alice) == 1  # ended, not completed
    assert "sgd" in capsys.readouterr().out  # the comparison table (the progress goes to the real stdout)
    assert rootfree("logs", sid, "-f", "--token", rootfree.alice) == 1
    assert rootfree("logs", sid, "--token", rootfree.alice) == 0
