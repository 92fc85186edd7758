"""The FastAPI application factory: routers, error rendering, the request guard.

``create_app(settings)`` builds one application; ``app_from_environment`` is
the factory uvicorn's worker processes call (settings come through the
environment, see ``settings.SETTINGS_ENV``). The database must already be at
the newest schema revision: ``nonstop serve`` sees to that before it starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nonstop import __version__
from nonstop.server.api import ROUTERS
from nonstop.server.api.admin_bundles import UPLOAD_PATH
from nonstop.server.context import ServerContext
from nonstop.server.errors import ApiError
from nonstop.server.logs import logger
from nonstop.server.maintenance import prune_forever
from nonstop.server.middleware import RequestGuard
from nonstop.server.settings import ServerSettings

DESCRIPTION = """\
The nonstop patch server. Hosts register with a registration key, check in
with their inventory and download the signed bundles their feed offers them.
Admins manage keys, bundles, feeds and hosts with scoped API tokens.
See docs/api.md for the workflow with examples.
"""


def create_app(settings: ServerSettings, context: ServerContext | None = None) -> FastAPI:
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
        pruner = asyncio.create_task(prune_forever(ctx.db, settings.checkin_history_days))
        yield
        pruner.cancel()
        ctx.db.dispose()

    app = FastAPI(
        title="nonstop patch server",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.ctx = ctx

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    for router in ROUTERS:
        app.include_router(router)

    def limit_for(method: str, path: str) -> int:
        if method == "POST" and path == UPLOAD_PATH:
            return settings.max_bundle_bytes
        return settings.max_request_bytes

    app.add_middleware(RequestGuard, limit_for=limit_for, access_log=settings.access_log)
    return app


def app_from_environment() -> FastAPI:
    return create_app(ServerSettings.from_environment())
