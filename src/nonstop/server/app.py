"""The FastAPI application factory: routers, error rendering, the request guard.

``create_app(settings)`` builds one application; ``app_from_environment`` is
the factory uvicorn's worker processes call (settings come through the
environment, see ``settings.SETTINGS_ENV``). The database must already be at
the newest schema revision: ``nonstop serve`` sees to that before it starts.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nonstop import __version__
from nonstop.server.api import ROUTERS
from nonstop.server.api.admin_bundles import UPLOAD_PATH
from nonstop.server.api.common import RAW_BODY_MODELS
from nonstop.server.api_docs import mount_docs
from nonstop.server.checkin_path import CheckinFastPath
from nonstop.server.context import ServerContext
from nonstop.server.db import is_disk_full
from nonstop.server.errors import ApiError, InsufficientStorage
from nonstop.server.logs import configure as configure_logs
from nonstop.server.logs import logger
from nonstop.server.maintenance import prune_forever, recompute_findings_forever
from nonstop.server.middleware import RequestGuard
from nonstop.server.settings import ServerSettings

DESCRIPTION = """\
The nonstop patch server. Hosts register with a registration key, check in
with their inventory and download the signed bundles their feed offers them.
Admins manage keys, bundles, feeds and hosts with scoped API tokens.
See docs/api.md for the workflow with examples.
"""


DISK_FULL = (
    "database disk is full (no space left on device): nothing was stored; "
    "the server's operator must free space"
)

# Allocations between first-generation passes (Python's default: 700).
GC_FIRST_GENERATION = 10_000


def create_app(
    settings: ServerSettings, context: ServerContext | None = None, owns_process: bool = False
) -> FastAPI:
    """The app; OWNS_PROCESS (``nonstop serve``): also tune this process's garbage collector."""
    ctx = context or ServerContext.create(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        logger().info(
            "server process ready",
            extra={
                "fields": {
                    "vendor_keys": ctx.vendor_keys.key_ids,
                    "blob_store": settings.blob_store,
                }
            },
        )
        await ctx.db.open_async_pool()
        if owns_process:
            _settle_heap()
        pruner = asyncio.create_task(prune_forever(ctx.db, settings.checkin_history_days))
        findings = asyncio.create_task(recompute_findings_forever(ctx.vulnerabilities))
        yield
        pruner.cancel()
        findings.cancel()
        await ctx.db.close_async_pool()
        ctx.db.dispose()

    app = FastAPI(
        title="nonstop patch server",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs is served with local assets (api_docs.py); ReDoc would load from a CDN.
        docs_url=None,
        redoc_url=None,
        # Metrics are Prometheus (/metrics); FastAPI's OpenTelemetry hooks would only cost
        # a provider lookup per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ctx
    mount_docs(app)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if is_disk_full(exc):  # not a lost connection: retrying soon would not help
            logger().error("database disk full", extra={"fields": {"path": request.url.path}})
            return await api_error(request, InsufficientStorage(DISK_FULL))
        # A lost connection (database restarted, network cut): the pool replaces it, and the
        # agent retries; the same check-in id keeps a retry from being recorded twice.
        detail = f"database unavailable: {exc.__class__.__name__}; retry"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})

    for error in (sqlalchemy.exc.OperationalError, psycopg.OperationalError):
        app.add_exception_handler(error, database_unavailable)

    for router in ROUTERS:
        app.include_router(router)
    _document_raw_bodies(app)

    def limit_for(method: str, path: str) -> int:
        if method == "POST" and path == UPLOAD_PATH:
            return settings.max_bundle_bytes
        return settings.max_request_bytes

    app.add_middleware(CheckinFastPath, fastapi_app=app)
    app.add_middleware(RequestGuard, limit_for=limit_for, access_log=settings.access_log)
    return app


def _settle_heap() -> None:
    """Keep the garbage collector's full passes short, once the app is built.

    A worker holds ~135,000 long-lived objects (FastAPI, pydantic, SQLAlchemy), and
    the objects of requests in flight get promoted, so full passes came every second
    or so under load and each walked the whole heap: 70-130 ms stalls, the whole p99
    of check-ins. Frozen objects are skipped by every pass; a larger first generation
    promotes fewer objects of requests still in flight.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_FIRST_GENERATION, 10, 10)


def _document_raw_bodies(app: FastAPI) -> None:
    """Put the models of bodies read by ``parse_json`` into the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in RAW_BODY_MODELS:
                document = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(document.pop("$defs", {}))
                components[model.__name__] = document
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """The app in a uvicorn worker process: a fresh interpreter, so it sets up logging too."""
    configure_logs()
    return create_app(ServerSettings.from_environment(), owns_process=True)
