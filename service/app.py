"""The FastAPI application: routers per resource, JSON errors a person can act on."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from service.api import audit, catalog, cluster, health, reports, studies, suites, target_sets, trials
from service.api.auth import TokenCache
from service.api.errors import ApiError, refusal_response
from service.api.limits import InputLimits
from service.control.supervisor import RunnerSupervisor
from service.domain import catalog as plugin_catalog
from service.domain.refusals import Refused
from service.settings import Settings, get_settings
from service.store.study_store import StoreUnavailable, StudyStore

log = logging.getLogger("rootfree.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        plugin_catalog.load()  # the installed plugins; a refused one is logged, never fatal
        app.state.store = StudyStore(settings.database_url)
        app.state.tokens = TokenCache(app.state.store.engine)
        app.state.supervisor = None
        if settings.start_runner:
            app.state.supervisor = RunnerSupervisor(settings, app.state.store)
            app.state.supervisor.start()
        # Everything imported so far (about 180k objects; 340k when torch and Ray were loaded
        # here, and a plugin may still bring torch) lives as long as the process; a full
        # collection walking it took 125 ms, 250 ms under load, and was the API's worst latency
        # (bench/api_latency.py). Frozen objects are never scanned.
        gc.collect()
        gc.freeze()
        yield
        if app.state.supervisor:
            app.state.supervisor.stop()

    app = FastAPI(title="rootfree", version="0.1.0", lifespan=lifespan,
                  description="Hyperparameter search for root-free adaptive optimizers")
    app.add_middleware(InputLimits)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_host_list)
    app.include_router(studies.router)
    app.include_router(trials.router)
    app.include_router(catalog.router)
    app.include_router(cluster.router)
    app.include_router(health.router)
    app.include_router(audit.router)
    app.include_router(reports.router)
    app.include_router(suites.router)
    app.include_router(target_sets.router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = []
        for e in exc.errors():
            field = ".".join(str(p) for p in e["loc"] if p != "body")
            message = e["msg"].removeprefix("Value error, ")
            if not field and ": " in message:  # a whole-model check names its field first
                field, message = message.split(": ", 1)
            errors.append({"field": field, "message": message})
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse(status_code=422,
                            content=jsonable_encoder({"detail": message, "errors": errors}))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(status_code=exc.status, content=exc.body(), headers=exc.headers)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused):  # a use-case's refusal (service/control)
        return refusal_response(exc)

    @app.exception_handler(StoreUnavailable)
    async def _db_down(request: Request, exc: StoreUnavailable):
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(status_code=500,
                            content={"detail": f"internal error ({type(exc).__name__}); "
                                               "see the controller's log"})

    return app
