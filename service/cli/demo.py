"""`rootfree demo`: the README's main job end to end. It starts the service on SQLite and a local
Ray in this process, runs a real comparison study, shows it live, ends with the verdicts (paired seed
runs of each optimizer's best configuration: the verdict table and its search-level line) and exports
the best configurations. Sized for about five minutes on 2 cores: two stages of 6 and 3 trials, 6
paired seed runs (the fewest the verdict warnings accept), 3 epochs on 4000 Fashion-MNIST images."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from service.cli.live import watch
from service.cli.localhost import free_port, ray_auth_token_file, wait_healthy
from service.cli.render import comparison_table, console, search_line, verdict_table
from service.client import Client

DEMO_CLIENT_TIMEOUT_S = 600.0


def cmd_demo(args) -> int:
    """Starts the service on SQLite + local Ray, runs a real comparison study, exports it."""
    import uvicorn

    from service.api.auth import create_token
    from service.app import create_app
    from service.settings import Settings
    from service.store.study_store import StudyStore

    port = args.port or free_port()
    settings = Settings(database_url=f"sqlite:///{Path(args.db).resolve()}", port=port,
                        num_cpus=args.num_cpus, dashboard=True)
    # Tokens are on, as in production: the demo makes a local token for itself (shown nowhere).
    store = StudyStore(settings.database_url)
    token, _ = create_token(store.engine, "demo", admin=False, actor="rootfree demo")
    store.engine.dispose()
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
        "protocol": {"stages": args.stages, "top_k": max(2, min(args.stages) // 2), "seed": 0,
                     "seeds": args.seeds, "paired": True},
        "budget": {"epochs": args.epochs, "train_subset": args.train_subset,
                   "test_subset": 2000, "width": 8, "batch_size": 64},
        "resources": {"cpu": 1, "gpu": 0}, "max_concurrent_trials": args.num_cpus or 2,
    }
    # the demo follows its own service: a machine busy with other work slows it, never ends the demo
    with Client(url, token, timeout=DEMO_CLIENT_TIMEOUT_S) as client:
        study = client.submit(spec)
        for w in study.data.get("warnings") or []:
            print(f"warning: {w}", file=sys.stderr)
        print(f"rootfree demo: API {url}/docs  study {study.id}")
        if study.data.get("dashboard_url"):
            ray_token = ray_auth_token_file()
            signin = f" (sign in with the token in {ray_token})" if ray_token.exists() else ""
            print(f"Ray dashboard: {study.data['dashboard_url']}{signin}")
        print(f"this study's log stream: rootfree logs {study.id} --url {url} -f")
        final = watch(study, interval=5.0)
        print()
        console().print(comparison_table(final))
        console().print(verdict_table(final))
        console().print(search_line(study.analysis()))
        Path(args.output).write_text(study.export("yaml"))
    print(f"\nexported the best configurations to {args.output}")
    server.should_exit = True
    thread.join(timeout=30)
    return 0 if final["status"] == "completed" else 1
