"""`rootfree watch` and the demo draw with rich: a table with progress bars on a terminal, plain
lines when the output is not one; the comparison ranks by the seed runs' mean."""

import io

import httpx
from rich.console import Console

from service.cli import live, render
from service.client import Client, Study

STUDY = {
    "id": "0123456789abcdef", "name": "demo", "status": "running",
    "spec": {"metric": "test_error", "mode": "min", "protocol": {"stages": [4, 2], "seeds": 2}},
    "queue": {"position": 1, "running": 2, "pending": 5, "priority": 0},
    "optimizers": [
        {"optimizer": "sgd", "stages": {"1": {"total": 4, "by_status": {"completed": 4}},
                                        "2": {"total": 2, "by_status": {"completed": 2}},
                                        "3": {"total": 2, "by_status": {"completed": 2}}},
         "best_objective": 0.10, "top_k_mean": 0.12, "best_config": {"lr": 0.1},
         "seed_runs": {"n": 2, "values": [0.30, 0.32], "mean": 0.31, "std": 0.014}},
        {"optimizer": "rfrmsprop", "stages": {"1": {"total": 4, "by_status": {"completed": 3, "running": 1}},
                                              "2": {"total": 2, "by_status": {}}, "3": {"total": 2, "by_status": {}}},
         "best_objective": 0.20, "top_k_mean": 0.22, "best_config": {"lr": 0.01},
         "seed_runs": {"n": 2, "values": [0.21, 0.22], "mean": 0.215, "std": 0.007}},
    ],
}


def _text(renderable) -> str:
    out = io.StringIO()
    Console(file=out, width=160, force_terminal=False).print(renderable)
    return out.getvalue()


def test_progress_table_and_ranking():
    text = _text(render.render(STUDY))
    assert "queue position 1" in text and "3/4" in text and "seeds" in text and "0.1000" in text
    table = _text(render.comparison_table(STUDY)).splitlines()
    rows = [line for line in table if "rfrmsprop" in line or "sgd" in line]
    assert "rfrmsprop" in rows[0] and "0.2150 ± 0.0070 (2)" in rows[0]  # ranked by the seed mean, not the best


def test_plain_lines_when_not_a_terminal(monkeypatch):
    calls = []

    def answer(request):
        calls.append(request.url.path)
        return httpx.Response(200, json=dict(STUDY, status="completed" if len(calls) > 1 else "running"))

    monkeypatch.setattr(live.time, "sleep", lambda s: None)
    http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(answer))
    out = io.StringIO()
    study = live.watch(Study(Client("http://svc", http=http), "0123456789abcdef"), stream=out)
    assert study["status"] == "completed" and calls == ["/studies/0123456789abcdef"] * 2
    text = out.getvalue()
    assert "\x1b[" not in text and "sgd" in text and "stage 1 4/4" in text


HOSTILE = {"name": "[/bold] $\\nosuchcmd$", "config": {"act": "[/bold]", "init": "[link=https://evil.example]x[/link]"},
           "optimizer": "[link=https://evil.example]sgd[/link]"}


def test_user_strings_are_plain_text_in_the_terminal():
    """A study name or a choice value with rich markup is shown as typed: no crash on "[/bold]",
    no hyperlink from "[link=...]"."""
    study = dict(STUDY, name=HOSTILE["name"],
                 optimizers=[dict(STUDY["optimizers"][0], best_config=HOSTILE["config"]),
                             dict(STUDY["optimizers"][1], optimizer=HOSTILE["optimizer"])])
    for renderable in (render.render(study), render.comparison_table(study)):
        out = io.StringIO()
        Console(file=out, width=400, force_terminal=True, color_system="truecolor").print(renderable)
        text = out.getvalue()
        assert "\x1b]8;" not in text  # no OSC 8 hyperlink
        assert "[/bold] $\\nosuchcmd$" in text and "[link=https://evil.example]sgd[/link]" in text
    assert "act=[/bold], init=[link=https://evil.example]x[/link]" in _text(render.comparison_table(study))
