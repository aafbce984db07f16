"""The ``rootfree`` command: serve, submit, watch, export, demo, verdict."""

# The docstring is --help's description. The commands' parts: service/client/ (every call to the
# API), service/cli/token.py (the token they send), service/cli/render.py (what they show),
# service/cli/live.py (watch, logs), service/cli/demo.py.

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from service.cli.demo import cmd_demo
from service.cli.live import follow_logs, watch
from service.cli.render import comparison_table, console, queue_table, suite_tables, verdict_table
from service.cli.token import resolve_token, save_token, token_file
from service.cli.verdict import add_command as add_verdict_command
from service.client import Client, ClientError, ServiceUnavailable, Study
from service.domain.statuses import TERMINAL

DEFAULT_URL = os.environ.get("ROOTFREE_URL", "http://127.0.0.1:8000")
TOKEN_HELP = "API token (default: $ROOTFREE_TOKEN, else the file `rootfree token create --save` wrote)"

REPORT_TIMEOUT_S = 1800.0  # `rootfree report --timeout`: a 5000-trial study's first report is not instant


CLIENT_TIMEOUT_HELP = ("seconds to keep trying a service that does not answer, retries with backoff included "
                       "(default: $ROOTFREE_CLIENT_TIMEOUT_S, else 60)")


def connect(args) -> Client:
    """The client of a command that talks to a running service: --url, --token (else
    ROOTFREE_TOKEN, else the token file), --timeout (else ROOTFREE_CLIENT_TIMEOUT_S)."""
    return Client(args.url, resolve_token(args.token), timeout=getattr(args, "client_timeout", None))


@contextmanager
def api_errors() -> Iterator[None]:
    """An error answer of the API ends the command: `error STATUS: DETAIL` on stderr, exit code 1;
    a service that did not answer within the client's limit: one line, exit code 2."""
    try:
        yield
    except ClientError as e:
        sys.exit(f"error {e.status}: {e.detail}")
    except ServiceUnavailable as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


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
    from service.cli.preflight import ConfigError, preflight

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
    from service.cli.preflight import ConfigError, check_database

    settings = _settings(args)
    try:
        check_database(settings.database_url)
    except ConfigError as e:
        print(f"rootfree migrate: {e}", file=sys.stderr)
        return 2
    print("the study database is at the newest schema")
    return 0


def cmd_submit(args) -> int:
    spec = yaml.safe_load(Path(args.file).read_text())  # YAML is a superset of JSON
    with connect(args) as client:
        study = client.submit(spec, idempotency_key=args.idempotency_key)
    print_warnings(study.data.get("warnings"))
    print(study.id)
    return 0


def print_warnings(warnings: list[str] | None) -> None:
    """The spec's warnings (it cannot produce a resolved verdict), on stderr: stdout keeps the id alone."""
    for w in warnings or []:
        print(f"warning: {w}", file=sys.stderr)


def cmd_watch(args) -> int:
    with connect(args) as client:
        study = watch(Study(client, args.study_id), args.interval)
    console().print(comparison_table(study))
    console().print(verdict_table(study))
    return 0 if study["status"] == "completed" else 1


def cmd_logs(args) -> int:
    with connect(args) as client:
        return follow_logs(Study(client, args.study_id), args.lines, args.follow)


def cmd_queue(args) -> int:
    with connect(args) as client:
        print(queue_table(client.cluster()))
    return 0


def cmd_export(args) -> int:
    with connect(args) as client:
        exported = Study(client, args.study_id).export(args.format, args.k)
    text = exported if args.format == "yaml" else json.dumps(exported, indent=2)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


def cmd_suite(args) -> int:
    """rootfree suite submit FILE | watch ID | report ID | export ID --format algoperf -o FILE.zip."""
    with connect(args) as client:
        return _suite(client, args)


def _suite(client: Client, args) -> int:
    from rich.text import Text

    if args.action == "submit":  # a file of several YAML documents submits several suites, one id a line
        docs = [d for d in yaml.safe_load_all(Path(args.target).read_text()) if d is not None]
        for i, spec in enumerate(docs):
            key = args.idempotency_key and (args.idempotency_key if len(docs) == 1 else f"{args.idempotency_key}-{i}")
            suite = client.submit_suite(spec, idempotency_key=key)
            print_warnings(suite.get("warnings"))
            print(suite["id"], flush=True)
        return 0
    if args.action == "export":
        if not args.output:
            print("rootfree suite export: give the zip's path with -o FILE.zip", file=sys.stderr)
            return 2
        data = client.suite_export(args.target, format=args.format)
        try:
            Path(args.output).write_bytes(data)
        except OSError as e:
            print(f"rootfree suite export: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
            return 2
        print(f"wrote {args.output}")
        return 0
    if args.action == "watch":
        last = ""
        while True:
            suite = client.suite(args.target)
            text = "\n".join([f"suite {suite['id']} ({suite['name']}): {suite['status']}"]
                             + [f"  {s['status']:<10} {s['id']}  {s['name']}" for s in suite["studies"]])
            if text != last:
                console().print(Text(text + "\n"))
                last = text
            if suite["status"] in TERMINAL:
                break
            time.sleep(args.interval)
    report = client.suite_report(args.target)
    if args.action == "report" and args.output:
        Path(args.output).write_text(client.suite_report(args.target, format="html"), encoding="utf-8")
        print(f"wrote {args.output}")
    if args.action == "report" and args.json:
        print(json.dumps(report, indent=2))
        return 0
    for table in suite_tables(report):
        console().print(table)
    return 0 if report["status"] == "completed" else 1


def cmd_token(args) -> int:
    """rootfree token create|list|revoke: straight on the study database (the operator's tool)."""
    from service.api.auth import create_token, list_tokens, revoke_tokens
    from service.store.engine import MigrationRefused
    from service.store.study_store import StoreUnavailable, StudyStore

    try:
        store = StudyStore(_settings(args).database_url)
    except (StoreUnavailable, MigrationRefused) as e:
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
        with connect(args) as client:
            if len(args.study_ids) == 1:
                text = Study(client, args.study_ids[0]).report_html(timeout=args.timeout)
            else:
                text = client.report_html(args.study_ids, timeout=args.timeout)
    except httpx.TimeoutException:
        # The server goes on and caches the page: asking again picks up that same computation.
        print(f"error: no report within {args.timeout:g} s; run the command again (the server keeps "
              "computing it and answers a repeated request from the same work) or pass a larger --timeout",
              file=sys.stderr)
        return 1
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text) // 1024} KiB, self-contained: open it in any browser)")
    return 0


def cmd_audit(args) -> int:
    with connect(args) as client:
        body = client.audit(args.limit, args.offset)
    print(f"{'time':<27}{'actor':<24}{'action':<17}{'target':<38}client")
    for e in body["items"]:
        print(f"{e['at'][:26]:<27}{(e['actor'] or '')[:23]:<24}{e['action']:<17}{(e['target'] or '-')[:37]:<38}"
              f"{e['client'] or '-'}")
    return 0


def cmd_agent(args) -> int:
    """Runs COMMAND once per claimed trial of an external study (service/cli/agent.py)."""
    from service.cli.agent import run_agent

    if not args.command:
        print("rootfree agent: give the command after --, e.g. rootfree agent ID -- python train.py",
              file=sys.stderr)
        return 2
    with connect(args) as client:
        return run_agent(client, args.study_id, args.command, count=args.count, poll_s=args.poll,
                         timeout_s=args.timeout)


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
        p.add_argument("--timeout", type=float, default=None, dest="client_timeout", help=CLIENT_TIMEOUT_HELP)
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
    q.add_argument("--timeout", type=float, default=None, dest="client_timeout", help=CLIENT_TIMEOUT_HELP)
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
    su = sub.add_parser("suite", help="a suite over several workloads: submit FILE | watch ID | report ID | "
                                      "export ID --format algoperf -o FILE.zip")
    su.add_argument("action", choices=["submit", "watch", "report", "export"])
    su.add_argument("target", metavar="FILE_OR_ID")
    su.add_argument("--url", default=DEFAULT_URL)
    su.add_argument("--token", default=None, help=TOKEN_HELP)
    su.add_argument("--timeout", type=float, default=None, dest="client_timeout", help=CLIENT_TIMEOUT_HELP)
    su.add_argument("--idempotency-key", default=None)
    su.add_argument("--interval", type=float, default=5.0)
    su.add_argument("-o", "--output", default=None, help="report: also write the HTML page here; export: the zip")
    su.add_argument("--format", choices=["algoperf"], default="algoperf",
                    help="export: AlgoPerf's log layout (a suite run under the algoperf ruleset)")
    su.add_argument("--json", action="store_true", help="report: print the numbers as JSON")
    su.set_defaults(func=cmd_suite)
    a = sub.add_parser("audit", help="the audit trail of state changes (admins)")
    a.add_argument("--url", default=DEFAULT_URL)
    a.add_argument("--token", default=None, help=TOKEN_HELP)
    a.add_argument("--timeout", type=float, default=None, dest="client_timeout", help=CLIENT_TIMEOUT_HELP)
    a.add_argument("--limit", type=int, default=100)
    a.add_argument("--offset", type=int, default=0)
    a.set_defaults(func=cmd_audit)
    ag = sub.add_parser("agent", help="train an external study's trials here: run COMMAND once per trial")
    ag.add_argument("study_id")
    ag.add_argument("--count", type=int, default=None, help="take at most N trials (default: until none is left)")
    ag.add_argument("--url", default=DEFAULT_URL)
    ag.add_argument("--token", default=None, help=TOKEN_HELP)
    ag.add_argument("--poll", type=float, default=2.0, help="seconds between claims while none may start")
    ag.add_argument("--timeout", type=float, default=None, metavar="S",
                    help="seconds one trial's command may run: a hung command is killed, its trial failed, "
                         "and the agent goes on (default: no limit)")
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
    d.add_argument("--stages", nargs="+", type=int, default=[6, 3])
    d.add_argument("--seeds", type=int, default=6, help="paired seed runs per optimizer (the verdicts)")
    d.add_argument("--epochs", type=int, default=3)
    d.add_argument("--train-subset", type=int, default=4000)
    d.add_argument("--num-cpus", type=int, default=2)
    d.add_argument("--db", default="rootfree-demo.db")
    d.add_argument("--port", type=int, default=None)
    d.add_argument("--output", default="rootfree-export.yaml")
    d.set_defaults(func=cmd_demo)
    add_optuna_commands(sub)
    add_verdict_command(sub)
    args = ap.parse_args(argv)
    with api_errors():
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
