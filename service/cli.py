"""The ``rootfree`` command: serve, submit, watch, export, demo."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import yaml

from service.statuses import FINISHED as TRIAL_FINISHED
from service.statuses import TERMINAL

if TYPE_CHECKING:
    from rich.text import Text

DEFAULT_URL = os.environ.get("ROOTFREE_URL", "http://127.0.0.1:8000")
TOKEN_HELP = "API token (default: $ROOTFREE_TOKEN, else the file `rootfree token create --save` wrote)"

REPORT_TIMEOUT_S = 1800.0  # `rootfree report --timeout`: a 5000-trial study's first report is not instant


def finished(by_status: dict[str, int]) -> int:
    """Trials that have ended, from one stage's `by_status` counts of `GET /studies/{id}`."""
    return sum(n for status, n in by_status.items() if status in TRIAL_FINISHED)


def finished_trials(study: dict) -> int:
    """Trials that have ended, over every optimizer and stage of a `GET /studies/{id}` body."""
    return sum(finished(c["by_status"]) for o in study["optimizers"] for c in o["stages"].values())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 60.0, alive=lambda: True) -> bool:
    """Polls `GET {url}/healthz` until it answers 200 (True), or `timeout_s` passes or `alive()`
    turns false (False): how every caller waits for a `rootfree serve` it has just started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def ray_auth_token_file() -> Path:
    """Where Ray keeps the token its dashboard asks for (Ray 2.60 turns token auth on by default
    for a local `ray.init()`)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))


def token_file() -> Path:
    """The per-user file the client commands read a token from (written 0600 by --save)."""
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "rootfree" / "token"


def save_token(token: str, path: Path | None = None) -> Path:
    path = path or token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def resolve_token(explicit: str | None) -> str | None:
    """--token, else ROOTFREE_TOKEN, else the per-user token file."""
    if explicit:
        return explicit
    if os.environ.get("ROOTFREE_TOKEN"):
        return os.environ["ROOTFREE_TOKEN"]
    try:
        return token_file().read_text().strip() or None
    except OSError:
        return None


AUTH: dict[str, str] = {}  # the Authorization header the client commands send (set by main)


def use_token(token: str | None) -> None:
    AUTH.clear()
    if token:
        AUTH["Authorization"] = f"Bearer {token}"


def _settings(args):
    from service.settings import Settings

    overrides = {}
    if getattr(args, "db", None):
        overrides["database_url"] = args.db
    if getattr(args, "ray_address", None):
        overrides["ray_address"] = args.ray_address
    for key in ("host", "port", "num_cpus"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    return Settings(**overrides)


def cmd_serve(args) -> int:
    import uvicorn

    from service.app import create_app
    from service.preflight import ConfigError, preflight

    settings = _settings(args)
    try:
        preflight(settings)
    except ConfigError as e:
        print(f"rootfree serve: {e}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
    return 0


def cmd_migrate(args) -> int:
    """Brings the study database to the newest schema (`serve` does this too, at start)."""
    from service.preflight import ConfigError, check_database

    settings = _settings(args)
    try:
        check_database(settings.database_url)
    except ConfigError as e:
        print(f"rootfree migrate: {e}", file=sys.stderr)
        return 2
    print("the study database is at the newest schema")
    return 0


def _check(r: httpx.Response) -> dict:
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        sys.exit(f"error {r.status_code}: {detail}")
    return r.json()


def cmd_submit(args) -> int:
    from service.client import Client, ClientError

    spec = yaml.safe_load(Path(args.file).read_text())  # YAML is a superset of JSON
    with Client(args.url, resolve_token(args.token)) as client:
        try:
            study = client.submit(spec, idempotency_key=args.idempotency_key)
        except ClientError as e:
            sys.exit(f"error {e.status}: {e.detail}")
    print(study.id)
    return 0


def _plain_progress(study: dict) -> str:
    lines = [f"study {study['id']} ({study['name']}): {study['status']}"]
    metric = study["spec"]["metric"]
    for o in study["optimizers"]:
        for stage, c in o["stages"].items():
            done = finished(c["by_status"])
            extra = ", ".join(f"{k} {v}" for k, v in sorted(c["by_status"].items()))
            lines.append(f"  {o['optimizer']:<10} stage {stage} {done}/{c['total']}  ({extra})")
        best = o["best_objective"]
        lines.append(f"  {'':<10} best {metric}: {best:.4f}" if best is not None else f"  {'':<10} best {metric}: -")
    return "\n".join(lines)


def plain(value) -> Text:
    """A user's string (a study name, a choice value) for rich: text, never markup (a "[/bold]"
    would crash the table, a "[link=...]" would put a hyperlink in the terminal)."""
    from rich.text import Text

    return Text(str(value))


def render(study: dict):
    """Live progress per optimizer and stage: a rich table with progress bars (plain lines when
    the output is not a terminal: see `watch`)."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    metric = study["spec"]["metric"]
    seeds_stage = str(len(study["spec"]["protocol"]["stages"]) + 1)
    place = study.get("queue") or {}
    title = f"study {study['id'][:8]} ({study['name']}): {study['status']}"
    if place:
        title += f" — queue position {place['position']}, {place['running']} running, {place['pending']} pending"
    table = Table(title=plain(title), title_justify="left")
    for col in ("optimizer", "stage", "progress", "done", "statuses", f"best {metric}"):
        table.add_column(plain(col))
    for o in study["optimizers"]:
        for stage, c in o["stages"].items():
            done = finished(c["by_status"])
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(c["by_status"].items()))
            best = o["best_objective"]
            table.add_row(plain(o["optimizer"]), plain("seeds" if stage == seeds_stage else stage),
                          ProgressBar(total=max(c["total"], 1), completed=done, width=24),
                          f"{done}/{c['total']}", plain(statuses),
                          f"{best:.4f}" if best is not None and stage == "1" else "")
    return table


def comparison_table(study: dict):
    """The final comparison, best first (by the seed runs' mean where there are seed runs)."""
    from rich.table import Table

    from service.results.summary import ranking

    metric = study["spec"]["metric"]
    table = Table(title=plain(f"{study['name']}: {metric} ({'lower' if study['spec']['mode'] == 'min' else 'higher'} "
                              "is better)"), title_justify="left")
    for col in ("#", "optimizer", f"best {metric}", "top-k mean", "seed mean ± std (n)", "best config"):
        table.add_column(plain(col))
    fmt = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
    for rank, o in enumerate(ranking(study), start=1):
        sr = o.get("seed_runs") or {}
        seeds = (f"{fmt(sr['mean'])} ± {fmt(sr.get('std'))} ({len(sr['values'])})" if sr.get("mean") is not None
                 else "-")
        cfg = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in (o["best_config"] or {}).items())
        table.add_row(str(rank), plain(o["optimizer"]), fmt(o["best_objective"]), fmt(o["top_k_mean"]), seeds,
                      plain(cfg))
    return table


def verdict_table(study: dict):
    """The pairwise verdicts of the seed runs (service/results/verdicts.py), or why there are none; user
    strings (optimizer names) go in as plain Text, never as rich markup."""
    from rich.table import Table
    from rich.text import Text

    from service.results.verdicts import export_comparisons, no_verdict_reason, runs_from_seed_runs

    comps = export_comparisons(study["spec"], study["optimizers"])
    if not comps:
        runs = runs_from_seed_runs({o["optimizer"]: o.get("seed_runs") for o in study["optimizers"]})
        why = no_verdict_reason(study["spec"], runs) or "no pair of optimizers has seed runs"
        return Text(f"No verdict is possible: {why}")
    paired = " (paired by seed)" if study["spec"]["protocol"].get("paired") else ""
    table = Table(title=Text(f"verdicts{paired}: diff = a - b, 95% Welch interval, permutation p"),
                  title_justify="left")
    for col in ("a", "b", "diff", "95% interval", "p", "verdict", "seeds needed"):
        table.add_column(col)
    fmt = lambda v: f"{v:.4g}" if v is not None else "-"  # noqa: E731
    for c in comps:
        table.add_row(Text(c["a"]), Text(c["b"]), fmt(c["diff"]), f"[{fmt(c['lo'])}, {fmt(c['hi'])}]",
                      fmt(c["p"]), Text(c["verdict"]), fmt(c["seeds_needed"]))
    return table


def console(stream=None):
    from rich.console import Console

    return Console(file=stream or sys.stdout, width=None if (stream or sys.stdout).isatty() else 140)


def watch(url: str, study_id: str, interval: float = 2.0, stream=sys.stdout) -> dict:
    """Polls the study until it ends: a live table on a terminal, a plain block per change otherwise."""
    out = console(stream)
    if out.is_terminal:
        from rich.live import Live

        with Live(console=out, refresh_per_second=4, transient=False) as live:
            while True:
                study = _check(httpx.get(f"{url}/studies/{study_id}", headers=AUTH, timeout=30))
                live.update(render(study))
                if study["status"] in TERMINAL:
                    return study
                time.sleep(interval)
    last = ""
    while True:
        study = _check(httpx.get(f"{url}/studies/{study_id}", headers=AUTH, timeout=30))
        text = _plain_progress(study)
        if text != last:
            print(text + "\n", file=stream, flush=True)
            last = text
        if study["status"] in TERMINAL:
            return study
        time.sleep(interval)


def cmd_watch(args) -> int:
    study = watch(args.url, args.study_id, args.interval)
    console().print(comparison_table(study))
    console().print(verdict_table(study))
    return 0 if study["status"] == "completed" else 1


def follow_logs(url: str, study_id: str, lines: int = 50, follow: bool = False,
                interval: float = 1.0, stream=sys.stdout) -> int:
    """Prints the last `lines` lines of a study's log stream; with `follow`, keeps printing new
    lines until the study has ended (exit code 0 when it completed)."""
    offset, ended = None, None
    while True:
        # The study's status first: a study seen ended has written its last line before we read.
        status = _check(httpx.get(f"{url}/studies/{study_id}", headers=AUTH, timeout=30))["status"]
        # First the last `lines` lines, then only what was written after them (by byte offset).
        params = {"tail": min(max(lines, 1), 100_000)} if offset is None else {"offset": offset}
        r = httpx.get(f"{url}/studies/{study_id}/logs", headers=AUTH, params=params, timeout=30)
        text = _check_text(r)
        current = text.splitlines()
        if offset is None:
            current = current[-lines:] if lines > 0 else []
        offset = int(r.headers.get("X-Log-Offset", 0))
        for line in current:
            print(line, file=stream, flush=True)
        if not follow:
            return 0
        if ended is not None:  # one more read after the end, for a runner still writing
            return 0 if ended == "completed" else 1
        if status in TERMINAL:
            ended = status
        time.sleep(interval)


def _check_text(r: httpx.Response) -> str:
    if r.status_code >= 400:
        _check(r)
    return r.text


def cmd_logs(args) -> int:
    return follow_logs(args.url, args.study_id, args.lines, args.follow)


def queue_table(cluster: dict) -> str:
    """`GET /cluster` as text: the nodes with their resources, then the queue in serving order."""
    def res(r: dict) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in sorted(r.items()) if k in ("CPU", "GPU") or v)

    lines = [f"{'node':<14}{'alive':<7}resources"]
    for n in cluster["nodes"]:
        lines.append(f"{n['node_id'][:12]:<14}{'yes' if n['alive'] else 'no':<7}{res(n['resources'])}")
    if not cluster["nodes"]:
        lines.append("(no nodes recorded yet: the runner has not started)")
    total, avail = cluster["resources"].get("total", {}), cluster["resources"].get("available", {})
    lines.append(f"total: {res(total) or '-'}   available: {res(avail) or '-'}")
    lines.append("")
    lines.append(f"{'#':<4}{'study':<10}{'name':<24}{'status':<9}{'priority':>8}{'running':>9}{'pending':>9}")
    for q in cluster["queue"]:
        lines.append(f"{q['position']:<4}{q['study_id'][:8]:<10}{q['name'][:23]:<24}{q['status']:<9}"
                     f"{q['priority']:>8}{q['running']:>9}{q['pending']:>9}")
    if not cluster["queue"]:
        lines.append("(no queued or running studies)")
    return "\n".join(lines)


def cmd_queue(args) -> int:
    print(queue_table(_check(httpx.get(f"{args.url}/cluster", headers=AUTH, timeout=30))))
    return 0


def cmd_export(args) -> int:
    r = httpx.get(f"{args.url}/studies/{args.study_id}/export", headers=AUTH,
                  params={"format": args.format, "k": args.k}, timeout=30)
    if r.status_code >= 400:
        _check(r)
    text = r.text if args.format == "yaml" else json.dumps(r.json(), indent=2)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


def cmd_demo(args) -> int:
    """Starts the service on SQLite + local Ray, runs a real comparison study, exports it."""
    import uvicorn

    from service.app import create_app
    from service.auth import create_token
    from service.settings import Settings
    from service.store.study_store import StudyStore

    port = args.port or free_port()
    settings = Settings(database_url=f"sqlite:///{Path(args.db).resolve()}", port=port,
                        num_cpus=args.num_cpus, dashboard=True)
    # Tokens are on, as in production: the demo makes a local token for itself (shown nowhere).
    store = StudyStore(settings.database_url)
    token, _ = create_token(store.engine, "demo", admin=False, actor="rootfree demo")
    store.engine.dispose()
    use_token(token)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    if not wait_healthy(url, timeout_s=120, alive=thread.is_alive):
        print(f"rootfree demo: the service did not start on {url}", file=sys.stderr)
        return 1
    spec = {
        "name": "demo-fmnist-cnn-rootfree", "workload": "fmnist_cnn",
        "optimizers": args.optimizers,
        "protocol": {"stages": args.stages, "top_k": max(2, min(args.stages) // 2), "seed": 0},
        "budget": {"epochs": args.epochs, "train_subset": args.train_subset,
                   "test_subset": 2000, "width": 8, "batch_size": 64},
        "resources": {"cpu": 1, "gpu": 0}, "max_concurrent_trials": args.num_cpus or 2,
    }
    study = _check(httpx.post(f"{url}/studies", json=spec, headers=AUTH, timeout=30))
    print(f"rootfree demo: API {url}/docs  study {study['id']}")
    if study.get("dashboard_url"):
        token = ray_auth_token_file()
        signin = f" (sign in with the token in {token})" if token.exists() else ""
        print(f"Ray dashboard: {study['dashboard_url']}{signin}")
    print(f"this study's log stream: rootfree logs {study['id']} --url {url} -f")
    study = watch(url, study["id"], interval=5.0)
    print()
    console().print(comparison_table(study))
    console().print(verdict_table(study))
    r = httpx.get(f"{url}/studies/{study['id']}/export", params={"format": "yaml"}, headers=AUTH, timeout=30)
    Path(args.output).write_text(r.text)
    print(f"\nexported the best configurations to {args.output}")
    server.should_exit = True
    thread.join(timeout=30)
    return 0 if study["status"] == "completed" else 1


def suite_tables(report: dict) -> list:
    """The suite report's numbers as rich tables (user strings as plain Text, never markup)."""
    from rich.table import Table
    from rich.text import Text

    fmt = lambda v, d=4: f"{v:.{d}g}" if isinstance(v, int | float) else "-"  # noqa: E731
    opts = report["optimizers"]
    scores = Table(title=Text(f"suite {report['name']}: {report['status']} (baseline {report['baseline'] or '-'})"),
                   title_justify="left")
    for col in ("optimizer", "score", "speed-up (workloads)", "trials", "CPU-s", "GPU-s"):
        scores.add_column(col)
    for o in opts:
        sp, cost = report["speedups"].get(o) or {}, report["tuning_cost"][o]
        scores.add_row(Text(o), fmt(report["scores"][o], 3), f"{fmt(sp.get('geomean'), 3)} ({sp.get('workloads', 0)})",
                       str(cost["trials"]), fmt(cost["cpu_s"]), fmt(cost["gpu_s"]))
    out: list = [scores]
    ttt = Table(title="time to target (s, epoch; - = missed)", title_justify="left")
    for col in ("workload", "target", *opts):
        ttt.add_column(Text(col))
    for w in report["workloads"]:
        cells = [f"{fmt(v['time_s'], 3)}, {fmt(v['epochs'], 3)}" if v["reached"] else "missed"
                 for v in (w["time_to_target"][o] for o in opts)]
        ttt.add_row(Text(w["key"]), fmt(w["target"]), *cells)
    out.append(ttt)
    for w in report["workloads"]:
        if not w["comparisons"]:
            out.append(Text(f"{w['key']}: no verdict is possible: {w.get('no_verdict')}"))
            continue
        v = Table(title=Text(f"{w['key']}: verdicts"), title_justify="left")
        for col in ("a", "b", "diff", "95% interval", "p", "verdict", "seeds needed"):
            v.add_column(col)
        for c in w["comparisons"]:
            v.add_row(Text(c["a"]), Text(c["b"]), fmt(c["diff"]), f"[{fmt(c['lo'])}, {fmt(c['hi'])}]", fmt(c["p"], 3),
                      Text(c["verdict"]), fmt(c["seeds_needed"]))
        out.append(v)
    return out


def cmd_suite(args) -> int:
    """rootfree suite submit FILE | watch ID | report ID."""
    from rich.text import Text

    if args.action == "submit":  # a file of several YAML documents submits several suites, one id a line
        docs = [d for d in yaml.safe_load_all(Path(args.target).read_text()) if d is not None]
        for i, spec in enumerate(docs):
            key = args.idempotency_key and (args.idempotency_key if len(docs) == 1 else f"{args.idempotency_key}-{i}")
            headers = {"Idempotency-Key": key} if key else {}
            suite = _check(httpx.post(f"{args.url}/suites", json=spec, headers={**AUTH, **headers}, timeout=60))
            print(suite["id"], flush=True)
        return 0
    if args.action == "watch":
        last = ""
        while True:
            suite = _check(httpx.get(f"{args.url}/suites/{args.target}", headers=AUTH, timeout=30))
            text = "\n".join([f"suite {suite['id']} ({suite['name']}): {suite['status']}"]
                             + [f"  {s['status']:<10} {s['id']}  {s['name']}" for s in suite["studies"]])
            if text != last:
                console().print(Text(text + "\n"))
                last = text
            if suite["status"] in TERMINAL:
                break
            time.sleep(args.interval)
    report = _check(httpx.get(f"{args.url}/suites/{args.target}/report", params={"format": "json"}, headers=AUTH,
                              timeout=300))
    if args.action == "report" and args.output:
        r = httpx.get(f"{args.url}/suites/{args.target}/report", headers=AUTH, timeout=300)
        text = _check_text(r)
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    if args.action == "report" and args.json:
        print(json.dumps(report, indent=2))
        return 0
    for table in suite_tables(report):
        console().print(table)
    return 0 if report["status"] == "completed" else 1


def cmd_token(args) -> int:
    """rootfree token create|list|revoke: straight on the study database (the operator's tool)."""
    from service.auth import create_token, list_tokens, revoke_tokens
    from service.store.study_store import StoreUnavailable, StudyStore

    try:
        store = StudyStore(_settings(args).database_url)
    except StoreUnavailable as e:
        print(f"rootfree token: {e}", file=sys.stderr)
        return 2
    actor = f"cli:{os.environ.get('USER') or os.getuid()}"
    if args.action == "create":
        try:
            token, tid = create_token(store.engine, args.user, admin=args.admin, actor=actor)
        except ValueError as e:
            print(f"rootfree token: {e}", file=sys.stderr)
            return 2
        print(f"token {tid} for user {args.user!r}{' (admin)' if args.admin else ''}; "
              "it is shown only now, keep it secret:")
        if args.save:
            print(f"(also saved to {save_token(token)}, mode 0600)")
        print(token)
        return 0
    if args.action == "list":
        print(f"{'id':>4}  {'user':<20}{'admin':<7}{'created':<22}{'last used':<22}revoked")
        for t in list_tokens(store.engine):
            when = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if d else "-"  # noqa: E731
            print(f"{t.id:>4}  {t.user:<20}{'yes' if t.admin else 'no':<7}{when(t.created_at):<22}"
                  f"{when(t.last_used_at):<22}{when(t.revoked_at)}")
        return 0
    n = revoke_tokens(store.engine, user=args.user, token_id=args.id, actor=actor)
    print(f"revoked {n} token(s)")
    return 0 if n else 1


def cmd_report(args) -> int:
    """Writes the HTML report of one or several studies (several: one page with a cross-study part)."""
    try:
        if len(args.study_ids) == 1:
            r = httpx.get(f"{args.url}/studies/{args.study_ids[0]}/report", headers=AUTH, timeout=args.timeout)
        else:
            r = httpx.get(f"{args.url}/report", params=[("study_id", s) for s in args.study_ids], headers=AUTH,
                          timeout=args.timeout)
    except httpx.TimeoutException:
        # The server goes on and caches the page: asking again picks up that same computation.
        print(f"error: no report within {args.timeout:g} s; run the command again (the server keeps "
              "computing it and answers a repeated request from the same work) or pass a larger --timeout",
              file=sys.stderr)
        return 1
    text = _check_text(r)
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text) // 1024} KiB, self-contained: open it in any browser)")
    return 0


def cmd_audit(args) -> int:
    body = _check(httpx.get(f"{args.url}/audit", params={"limit": args.limit, "offset": args.offset},
                            headers=AUTH, timeout=30))
    print(f"{'time':<27}{'actor':<24}{'action':<17}{'target':<38}client")
    for e in body["items"]:
        print(f"{e['at'][:26]:<27}{(e['actor'] or '')[:23]:<24}{e['action']:<17}{(e['target'] or '-')[:37]:<38}"
              f"{e['client'] or '-'}")
    return 0


def cmd_agent(args) -> int:
    """Runs COMMAND once per claimed trial of an external study (service/agent.py)."""
    from service.agent import run_agent
    from service.client import Client

    if not args.command:
        print("rootfree agent: give the command after --, e.g. rootfree agent ID -- python train.py",
              file=sys.stderr)
        return 2
    with Client(args.url, resolve_token(args.token)) as client:
        return run_agent(client, args.study_id, args.command, count=args.count, poll_s=args.poll)


def main(argv: list[str] | None = None) -> int:
    from service.followers.optuna_view import add_commands as add_optuna_commands

    ap = argparse.ArgumentParser(prog="rootfree", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the API and the study runner")
    s.add_argument("--db", help="SQLAlchemy URL of the study store (default sqlite:///rootfree.db)")
    s.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    s.add_argument("--host", default=None)
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")
    s.set_defaults(func=cmd_serve)
    m = sub.add_parser("migrate", help="apply the study database's schema migrations and exit")
    m.add_argument("--db", help="SQLAlchemy URL of the study store (default: ROOTFREE_DATABASE_URL)")
    m.set_defaults(func=cmd_migrate)
    for name, func, helptext in (("submit", cmd_submit, "submit a study (YAML or JSON file)"),
                                 ("watch", cmd_watch, "live progress of a study"),
                                 ("logs", cmd_logs, "a study's log stream (stages, trials, reports)"),
                                 ("export", cmd_export, "export a study's best configurations")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("file" if name == "submit" else "study_id")
        p.add_argument("--url", default=DEFAULT_URL)
        p.add_argument("--token", default=None, help=TOKEN_HELP)
        p.set_defaults(func=func)
        if name == "submit":
            p.add_argument("--idempotency-key", default=None)
        if name == "watch":
            p.add_argument("--interval", type=float, default=2.0)
        if name == "logs":
            p.add_argument("-n", "--lines", type=int, default=50, help="print the last N lines")
            p.add_argument("-f", "--follow", action="store_true",
                           help="keep printing new lines until the study ends")
        if name == "export":
            p.add_argument("--format", choices=["json", "yaml"], default="yaml")
            p.add_argument("--k", type=int, default=1)
            p.add_argument("--output", default=None)
    q = sub.add_parser("queue", help="the cluster's nodes and the queue of active studies")
    q.add_argument("--url", default=DEFAULT_URL)
    q.add_argument("--token", default=None, help=TOKEN_HELP)
    q.set_defaults(func=cmd_queue)
    r = sub.add_parser("report", help="write a study report (HTML, self-contained); several ids: one page")
    r.add_argument("study_ids", nargs="+", metavar="ID")
    r.add_argument("-o", "--output", default="rootfree-report.html")
    r.add_argument("--timeout", type=float, default=REPORT_TIMEOUT_S,
                   help=f"seconds to wait for the page (default {REPORT_TIMEOUT_S:g}; a large study's first "
                        "report takes a while, later ones come from the server's cache)")
    r.add_argument("--url", default=DEFAULT_URL)
    r.add_argument("--token", default=None, help=TOKEN_HELP)
    r.set_defaults(func=cmd_report)
    su = sub.add_parser("suite", help="a suite over several workloads: submit FILE | watch ID | report ID")
    su.add_argument("action", choices=["submit", "watch", "report"])
    su.add_argument("target", metavar="FILE_OR_ID")
    su.add_argument("--url", default=DEFAULT_URL)
    su.add_argument("--token", default=None, help=TOKEN_HELP)
    su.add_argument("--idempotency-key", default=None)
    su.add_argument("--interval", type=float, default=5.0)
    su.add_argument("-o", "--output", default=None, help="report: also write the HTML page here")
    su.add_argument("--json", action="store_true", help="report: print the numbers as JSON")
    su.set_defaults(func=cmd_suite)
    a = sub.add_parser("audit", help="the audit trail of state changes (admins)")
    a.add_argument("--url", default=DEFAULT_URL)
    a.add_argument("--token", default=None, help=TOKEN_HELP)
    a.add_argument("--limit", type=int, default=100)
    a.add_argument("--offset", type=int, default=0)
    a.set_defaults(func=cmd_audit)
    ag = sub.add_parser("agent", help="train an external study's trials here: run COMMAND once per trial")
    ag.add_argument("study_id")
    ag.add_argument("--count", type=int, default=None, help="take at most N trials (default: until none is left)")
    ag.add_argument("--url", default=DEFAULT_URL)
    ag.add_argument("--token", default=None, help=TOKEN_HELP)
    ag.add_argument("--poll", type=float, default=2.0, help="seconds between claims while none may start")
    ag.add_argument("command", nargs="+", help="after --: the command and its arguments")
    ag.set_defaults(func=cmd_agent)
    t = sub.add_parser("token", help="API tokens: create, list, revoke (on the study database)")
    tsub = t.add_subparsers(dest="action", required=True)
    tc = tsub.add_parser("create", help="make a token for a user; it is printed once, as the last line")
    tc.add_argument("--user", required=True)
    tc.add_argument("--admin", action="store_true", help="may see and act on every study, read the audit")
    tc.add_argument("--save", action="store_true", help=f"also write it to {token_file()} (mode 0600)")
    tl = tsub.add_parser("list", help="users, roles, created, last used (never the tokens)")
    tr = tsub.add_parser("revoke", help="revoke a user's tokens or one token")
    who = tr.add_mutually_exclusive_group(required=True)
    who.add_argument("--user")
    who.add_argument("--id", type=int)
    for p in (tc, tl, tr):
        p.add_argument("--db", help="SQLAlchemy URL of the study store (default: ROOTFREE_DATABASE_URL)")
        p.set_defaults(func=cmd_token)
    d = sub.add_parser("demo", help="the README's main job: a real comparison study end to end")
    d.add_argument("--optimizers", nargs="+", default=["sgd", "adamw", "rfrmsprop"])
    d.add_argument("--stages", nargs="+", type=int, default=[6, 6])
    d.add_argument("--epochs", type=int, default=3)
    d.add_argument("--train-subset", type=int, default=6000)
    d.add_argument("--num-cpus", type=int, default=2)
    d.add_argument("--db", default="rootfree-demo.db")
    d.add_argument("--port", type=int, default=None)
    d.add_argument("--output", default="rootfree-export.yaml")
    d.set_defaults(func=cmd_demo)
    add_optuna_commands(sub)
    args = ap.parse_args(argv)
    if hasattr(args, "token"):
        use_token(resolve_token(args.token))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
