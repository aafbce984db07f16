"""Seed re-runs, the original training scheme, the analysis and the report, on a real local Ray
with the noisy-quadratic workload; the page rendered by a real headless Chromium."""

import itertools
import math
import shutil
import statistics
import subprocess

import pytest
from fastapi.testclient import TestClient

from service.api.schemas import StudySpec
from service.app import create_app
from service.results import analysis
from service.results.summary import optimizer_summaries, ranking
from service.settings import Settings
from tests.service.conftest import bearer, make_token
from tests.support.serving import run_to_end


def test_expected_best_matches_a_direct_computation():
    values = [0.3, 0.1, 0.5]  # min mode: smaller is better
    curve = analysis.expected_best(values, "min", n_boot=50)
    for k in (1, 2, 3):  # every k-tuple drawn with replacement, equally likely
        direct = statistics.fmean(min(t) for t in itertools.product(values, repeat=k))
        assert math.isclose(curve[k - 1]["mean"], direct, rel_tol=1e-12)
        assert curve[k - 1]["lo"] <= curve[k - 1]["mean"] + 1e-12 <= curve[k - 1]["hi"] + 2e-12
    # max mode, and a failure counts as the worst finite value
    curve = analysis.expected_best([2.0, None, 1.0], "max", n_boot=10)
    direct = statistics.fmean(max(t) for t in itertools.product([2.0, 1.0, 1.0], repeat=2))
    assert math.isclose(curve[1]["mean"], direct)
    assert analysis.expected_best([None, None], "min") == []


def test_edf_and_performance_profile():
    assert analysis.edf([3.0, 1.0, float("nan"), 2.0]) == [[1.0, 1 / 3], [2.0, 2 / 3], [3.0, 1.0]]
    prof = analysis.performance_profile({"a": {"x": 1.0, "y": 2.0}, "b": {"x": 3.0, "y": 1.5}}, "min", taus=[1, 2, 3])
    assert prof["x"] == [[1, 0.5], [2, 1.0], [3, 1.0]] and prof["y"] == [[1, 0.5], [2, 1.0], [3, 1.0]]
    prof = analysis.performance_profile({"a": {"x": 1.0, "y": 4.0}}, "min", taus=[1, 2, 5])
    assert prof["y"] == [[1, 0.0], [2, 0.0], [5, 1.0]]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two studies run by a real runner: one with seed re-runs, one in the original scheme."""
    pytest.importorskip("ray")
    tmp = tmp_path_factory.mktemp("report")

    def spec(name, **protocol):
        return StudySpec(name=name, workload="noisy_quadratic", optimizers=["sgd", "rfrmsprop"],
                         protocol={"stages": [4, 2], "top_k": 2, "seed": 5, **protocol},
                         budget={"epochs": 3}, max_concurrent_trials=2).resolved()

    store, (seeded, original) = run_to_end(tmp, [spec("seeded", seeds=3),
                                                 spec("original", stages=[5], scheme="original")])
    yield store, seeded, original, tmp


@pytest.mark.slow
def test_seed_runs_retrain_the_best_configuration(finished):
    store, sid, _, _ = finished
    study = store.get_study(sid)
    assert study.status == "completed", study.error
    summaries = {o["optimizer"]: o for o in optimizer_summaries(store, study)}
    for opt in ("sgd", "rfrmsprop"):
        search = [t for t in store.trials(sid, optimizer=opt) if t.stage <= 2 and t.status == "completed"]
        best = min(search, key=lambda t: (t.objective, t.stage, t.index))
        runs = store.trials(sid, optimizer=opt, stage=3)
        assert len(runs) == 3 and all(t.config == best.config for t in runs)  # the best config, unchanged
        seeds = [t.seed for t in runs]
        assert len(set(seeds)) == 3 and 5 not in seeds  # fresh and distinct
        assert all(t.seed == 5 for t in store.trials(sid, optimizer=opt) if t.stage <= 2)
        values = [t.objective for t in runs if t.status == "completed"]
        sr = summaries[opt]["seed_runs"]
        assert sr["n"] == 3 and sorted(sr["values"]) == sorted(values)
        assert math.isclose(sr["mean"], statistics.fmean(values))
        assert math.isclose(sr["median"], statistics.median(values))
        assert math.isclose(sr["std"], statistics.stdev(values))
        assert summaries[opt]["best_trial_id"] == best.id  # "best" stays the search's best trial
    body = {"spec": study.spec, "optimizers": list(summaries.values())}
    order = [o["optimizer"] for o in ranking(body)]
    assert order == sorted(summaries, key=lambda o: summaries[o]["seed_runs"]["mean"])


@pytest.mark.slow
def test_original_scheme_searches_only_lr_with_a_constant_rate(finished):
    store, _, sid, _ = finished
    study = store.get_study(sid)
    assert study.status == "completed", study.error
    trials = store.trials(sid)
    for opt in ("sgd", "rfrmsprop"):
        configs = [t.config for t in trials if t.optimizer == opt]
        assert len({c["lr"] for c in configs}) == len(configs)  # lr varies
        others = [{k: v for k, v in c.items() if k != "lr"} for c in configs]
        assert all(o == others[0] for o in others)  # nothing else does
    # the fixed values RF-RMSProp shares with RMSProp (issue 29's fair pairs) are listed too
    shared = {"beta2": 0.01, "momentum": 0.0, "damping": 1e-4, "weight_decay": 0.0, "gamma": 1.0}
    assert all(c == {"lr": c["lr"], "batch_size": 1, "init": 0.0, **shared} for c in
               (t.config for t in trials if t.optimizer == "rfrmsprop"))
    for t in trials:
        lrs = [h["lr"] for h in store.history(t.id)]
        assert len(lrs) >= 1 and all(math.isclose(x, t.config["lr"]) for x in lrs), lrs  # constant
    # while the modern scheme follows the workload's step schedule
    seeded = [t for t in store.trials(finished[1]) if t.status == "completed"]
    assert any(store.history(t.id)[-1]["lr"] < store.history(t.id)[0]["lr"] for t in seeded)


@pytest.mark.slow
def test_report_and_analysis_through_the_api_and_the_cli(finished, tmp_path):
    store, seeded, original, _ = finished
    token = make_token(store.url, "alice", admin=False)
    app = create_app(Settings(database_url=store.url, start_runner=False))
    with TestClient(app, headers=bearer(token)) as c:
        a = c.get(f"/studies/{seeded}/analysis", params={"target": 5.0}).json()
        for opt in ("sgd", "rfrmsprop"):
            o = a["optimizers"][opt]
            assert [p["trials"] for p in o["expected_best"]] == list(range(1, 7))
            assert o["time_to_target"]["reached_share"] is not None and o["seed_runs"]["n"] == 3
            assert set(o["edf"]) == {"1", "2"} and "lr" in o["hyperparameters"]
            assert o["time_per_epoch_s"] > 0 and o["peak_memory_mb"] > 0
        page = c.get(f"/studies/{seeded}/report")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        both = c.get("/report", params=[("study_id", seeded), ("study_id", original)]).text
        assert c.get(f"/studies/{seeded}/export").json()["seed_runs"]["sgd"]["n"] == 3
        # the verdicts: in the analysis and the export, the same; in the page above the ranking
        assert [(v["a"], v["b"]) for v in a["comparisons"]] == [("sgd", "rfrmsprop")]
        assert c.get(f"/studies/{seeded}/export").json()["comparisons"] == a["comparisons"]
        assert "No verdict is possible" in c.get(f"/studies/{original}/report").text  # no seed runs
    assert html.count("<figure>") >= 8 and html.count("<figcaption>") == html.count("<figure>")
    for caption in ("Expected best", "Empirical distribution", "Learning curves", "against lr", "fresh seeds",
                    "per status", "time per epoch"):
        assert caption in html, caption
    for part in ("Spec", "Stage spaces", "Library versions", "rootfree submit study.yaml"):
        assert part in html
    assert html.index("<h3>Verdicts") < html.index("Ranking:") < html.index("<th>#</th>")
    # self-contained: no script, no remote resource of any kind
    for bad in ("<script", "src=\"http", "href=\"http", "url(http", "@import"):
        assert bad not in html and bad not in both
    assert "Across studies" in both and "Performance profile" in both and "Figure 1" in both
    assert both.index("Across studies") < both.index("id='study-")
    # the CLI writes the same page
    import threading

    import uvicorn  # noqa: F401 - served in a thread for the CLI

    from service.cli import commands as cli
    from tests.support import local as testing

    port = testing.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(database_url=store.url, start_runner=False)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    assert testing.wait_healthy(f"http://127.0.0.1:{port}")
    out = tmp_path / "two.html"
    try:
        assert cli.main(["report", seeded, original, "-o", str(out), "--url", f"http://127.0.0.1:{port}",
                         "--token", token]) == 0
    finally:
        server.should_exit = True
    text = out.read_text()
    assert "Across studies" in text and text.count("<figure>") > html.count("<figure>")
    render_in_chromium(out, tmp_path)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get"):  # not installed yet: try Debian's package
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=600)
    return shutil.which("chromium")


def render_in_chromium(page, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium could be installed")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chrome'}", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "report.png"
    r = subprocess.run([exe, *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    dom = subprocess.run([exe, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "Across studies" in dom.stdout and dom.stdout.count("<svg") >= 8
    errors = [line for line in (r.stderr + dom.stderr).splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    assert not errors, errors


def test_study_names_are_plain_text_in_the_figures():
    """matplotlib draws a study name as typed: no math text parser (a name "$\\nosuchcmd$" raised
    in it and made the cross-study report a 500)."""
    import matplotlib

    from service.results.report import plots

    panels = [{"name": name, "workload": "noisy_quadratic", "metric": "loss",
               "rows": [{"optimizer": "sgd", "value": 0.5, "std": 0.1}]}
              for name in ("$\\nosuchcmd$", "$x^2$ costs $5")]
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, to read it back
        out = plots.figure_one(panels)
    assert "$\\nosuchcmd$ (noisy_quadratic)" in out and "$x^2$ costs $5 (noisy_quadratic)" in out


def test_the_cross_study_report_takes_any_study_name(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    app = create_app(Settings(database_url=db, start_runner=False, storage_path=str(tmp_path / "runs")))
    spec = {"workload": "noisy_quadratic", "optimizers": ["sgd"], "protocol": {"stages": [2], "top_k": 2},
            "budget": {"epochs": 1}}
    with TestClient(app, headers=bearer(make_token(db))) as c:
        ids = [c.post("/studies", json={**spec, "name": name}).json()["id"]
               for name in ("$\\nosuchcmd$", "[/bold] <b>plain</b>")]
        r = c.get("/report", params={"study_id": ids})
        assert r.status_code == 200, r.text
        assert "$\\nosuchcmd$" in r.text and "&lt;b&gt;plain&lt;/b&gt;" in r.text
