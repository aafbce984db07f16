"""GET /healthz: the truth about this controller — its database, its runner (leader or standby,
pid, restarts, the lease's expiry) and the Ray cluster as the leader last recorded it. 200 when
all is well; 503, in the same shape, naming the failing part. Never a secret (no URL, no token).

It needs no token (load balancers and probes call it), so an anonymous caller (or a non-admin)
gets only the status and the names of the failing parts; the details (the leader's host:pid, the
runner's pid, its last error, which can name the database host and user) need an admin token."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from service.api.auth import current_user
from service.api.deps import get_store
from service.store import lease as lease_mod

router = APIRouter(tags=["health"])


def _admin(request: Request) -> bool:
    """Whether the caller shows an admin token (a missing or wrong one is no error here)."""
    try:
        return current_user(request).admin
    except HTTPException:
        return False
    except Exception:  # noqa: BLE001 - the database is down: a token verified before still counts
        _, _, token = request.headers.get("authorization", "").partition(" ")
        principal = request.app.state.tokens.last_known(token.strip()) if token.strip() else None
        return principal is not None and principal.admin


@router.get("/healthz")
def healthz(request: Request):
    store = get_store(request)
    failing: list[str] = []
    lease_row, record = None, {}
    try:
        store.count_studies("running")
        lease_row = lease_mod.current(store.engine)
        record = store.cluster()
        database = "ok"
    except Exception as e:  # noqa: BLE001 - any database failure is the answer, not a 500
        database = f"unreachable ({type(e).__name__})"
        failing.append("database")
    supervisor = getattr(request.app.state, "supervisor", None)
    if supervisor is None:
        runner = {"role": "off", "pid": None, "restarts": 0, "lease_expires_at": None}
    else:
        alive = supervisor.alive()
        held = (lease_row is not None and lease_row["holder"] == supervisor.holder
                and lease_row["expires_at"] > datetime.now(UTC))
        runner = {"role": ("leader" if held else "standby") if alive else "dead",
                  "pid": supervisor.pid, "restarts": supervisor.restarts,
                  "lease_expires_at": lease_row["expires_at"].isoformat() if lease_row else None,
                  "leader": lease_row["holder"] if lease_row else None}
        if supervisor.last_error:
            runner["last_error"] = supervisor.last_error
        if not alive:
            failing.append("runner")
    nodes = record.get("nodes") or []
    ray = {"nodes_alive": sum(1 for n in nodes if n.get("alive")),
           "recorded_at": record["updated_at"].isoformat() if record.get("updated_at") else None}
    body = {"status": "ok" if not failing else "unavailable"}
    if _admin(request):
        body.update(database=database, runner=runner, ray=ray)
    if failing:
        body["failing"] = failing
    return JSONResponse(status_code=503 if failing else 200, content=body)
