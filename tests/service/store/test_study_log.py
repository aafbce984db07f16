"""The study's log stream: the file, its link into a Ray log directory, GET /studies/{id}/logs,
`rootfree logs`. The end-to-end test reads the same stream from a real run and from the Ray
dashboard."""

import io
import logging
import os
import threading

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli import live
from service.client import Client, Study
from service.settings import Settings
from service.store.study_log import LOG_SUBDIR, StudyLog, log_path, tail
from tests.service.conftest import Spy, bearer, make_token

SPEC = {"name": "s", "workload": "fmnist_cnn", "optimizers": ["sgd"],
        "protocol": {"stages": [2, 2], "top_k": 2, "seed": 0},
        "budget": {"epochs": 1, "train_subset": 256}}


def test_lines_are_appended_timestamped_and_survive_a_reopen(tmp_path):
    a = StudyLog(str(tmp_path / "runs"), "abc")
    a.event("study %r started", "x")
    a.close()
    b = StudyLog(str(tmp_path / "runs"), "abc")  # a restarted controller appends
    b.event("study resumed")
    b.close()
    lines = tail(log_path(str(tmp_path / "runs"), "abc"), 10)
    assert [line.split(" ", 2)[2] for line in lines] == ["study 'x' started", "study resumed"]
    assert all(line.split(" ")[1] == "INFO" for line in lines)
    assert lines[0][:4].isdigit() and "T" in lines[0].split(" ")[0]  # ISO timestamp first
    assert tail(log_path(str(tmp_path / "runs"), "other"), 10) == []


def test_tail_returns_only_the_last_lines(tmp_path):
    slog = StudyLog(str(tmp_path), "t")
    for i in range(100):
        slog.event("line %d", i)
    slog.close()
    assert [line.rsplit(" ", 1)[1] for line in tail(slog.path, 3)] == ["97", "98", "99"]


def test_concurrent_writers_never_interleave_lines(tmp_path):
    slog = StudyLog(str(tmp_path), "c")

    def write(k):
        for i in range(200):
            slog.event("writer %d line %d %s", k, i, "x" * 200)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slog.close()
    lines = tail(slog.path, 10_000)
    assert len(lines) == 800
    assert all(line.endswith("x" * 200) and " writer " in line for line in lines)


def test_linked_into_the_ray_log_directory(tmp_path):
    logs_dir = tmp_path / "session" / "logs"
    logs_dir.mkdir(parents=True)
    slog = StudyLog(str(tmp_path / "runs"), "sid", logs_dir)
    slog.event("hello")
    link = logs_dir / LOG_SUBDIR / "study-sid.log"
    assert slog.ray_name == f"{LOG_SUBDIR}/study-sid.log"
    assert link.is_symlink() and link.resolve() == slog.path
    assert link.read_text().endswith("hello\n")
    slog.close()
    again = StudyLog(str(tmp_path / "runs"), "sid", logs_dir)  # a stale link is replaced
    again.close()
    assert link.resolve() == slog.path


def test_an_unwritable_ray_log_directory_only_loses_the_link(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("not a directory")
    slog = StudyLog(str(tmp_path / "runs"), "sid", blocker)
    slog.event("still written")
    slog.close()
    assert slog.ray_name is None
    assert tail(slog.path, 1)[0].endswith("still written")


@pytest.fixture
def app_client(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", start_runner=False,
                        storage_path=str(tmp_path / "runs"))
    with TestClient(create_app(settings), headers=bearer(make_token(settings.database_url))) as c:
        yield c, settings


def test_logs_endpoint_serves_the_tail_and_delete_removes_the_file(app_client):
    client, settings = app_client
    sid = client.post("/studies", json=SPEC).json()["id"]
    study = client.get(f"/studies/{sid}").json()
    assert study["links"]["logs"] == f"/studies/{sid}/logs"
    assert study["dashboard_log_url"] is None  # no runner here, so no Ray node to point at
    assert client.get(f"/studies/{sid}/logs").text == ""  # not started yet: empty, not an error
    slog = StudyLog(settings.storage_path, sid)
    for i in range(5):
        slog.event("event %d", i)
    slog.close()
    r = client.get(f"/studies/{sid}/logs", params={"tail": 2})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert [line.rsplit(" ", 1)[1] for line in r.text.splitlines()] == ["3", "4"]
    assert client.get(f"/studies/{sid}/logs", params={"tail": 0}).status_code == 422
    assert client.get("/studies/nope/logs").status_code == 404
    client.post(f"/studies/{sid}/cancel")
    assert client.delete(f"/studies/{sid}").status_code == 204
    assert not os.path.exists(slog.path)


def test_rootfree_logs_prints_the_tail_and_follows_to_the_end(app_client):
    client, settings = app_client
    sid = client.post("/studies", json=SPEC).json()["id"]
    slog = StudyLog(settings.storage_path, sid)
    for i in range(4):
        slog.event("before %d", i)

    calls = {"n": 0}

    def before(method, path, params):
        calls["n"] += 1
        if calls["n"] == 3:  # while following: new lines arrive, then the study ends
            slog.event("after")
            client.post(f"/studies/{sid}/cancel")

    study = Study(Client("http://testserver", http=Spy(client, before)), sid)
    out = io.StringIO()
    assert live.follow_logs(study, lines=2, stream=out) == 0
    assert [line.rsplit(" ", 1)[1] for line in out.getvalue().splitlines()] == ["2", "3"]
    out = io.StringIO()
    calls["n"] = 0
    code = live.follow_logs(study, lines=1, follow=True, interval=0.01, stream=out)
    slog.close()
    assert code == 1  # cancelled, not completed
    assert [line.split(" ", 2)[2] for line in out.getvalue().splitlines()] == ["before 3", "after"]


def test_only_study_level_lines_and_warnings_reach_the_console(tmp_path, caplog):
    slog = StudyLog(str(tmp_path), "console")
    with caplog.at_level("INFO", logger="rootfree.study"):
        slog.event("study started")
        slog.event("trial x epoch 1", echo=False)
        slog.event("trial x restored", echo=False, level=logging.WARNING)
    slog.close()
    assert [r.getMessage() for r in caplog.records] == ["[console] study started",
                                                        "[console] trial x restored"]
    assert len(tail(slog.path, 10)) == 3


def test_an_unwritable_storage_path_costs_the_file_not_the_study(tmp_path, caplog):
    storage = tmp_path / "runs"
    storage.write_text("a file where the storage folder should be")
    with caplog.at_level("INFO", logger="rootfree.study"):
        slog = StudyLog(str(storage), "ro", tmp_path)
        slog.event("study started")  # no exception: the runner goes on
        slog.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot write its log file" in m for m in messages)
    assert "[ro] study started" in messages
    assert slog.ray_name is None
