"""The check-in served ahead of FastAPI's routing: the fleet's hottest request, kept lean.

A first check-in costs about 1 ms of server CPU, and FastAPI's exception and
exit-stack middlewares, route matching and dependency resolution took about a
sixth of it. ``CheckinFastPath`` answers POST /api/v1/hosts/{host_id}/checkin
with the route's own code (``host_routes.check_in_answer``, which checks the
token before it reads the body), the same bearer scheme and the app's own
exception handlers, and passes every other request on. It sits inside
``RequestGuard`` (NUL and size limits, latency metrics, access log) and
Starlette's ServerErrorMiddleware (500s), and it sets ``scope["route"]`` to
the FastAPI route so the metrics carry the same label.
The route stays in the app, where it documents the endpoint in the OpenAPI.
"""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from nonstop.server.api import host_routes
from nonstop.server.api.deps import client_of, context_of, host_scheme


class CheckinFastPath:
    """ASGI middleware answering check-ins itself and passing every other request to APP."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.handlers = fastapi_app.exception_handlers
        self.route = next(
            route
            for route in host_routes.router.routes
            if isinstance(route, APIRoute) and route.endpoint is host_routes.check_in
        )
        self.prefix, self.suffix = self.route.path.split("{host_id}")

    def host_id_of(self, scope: Scope) -> str | None:
        """The host id if SCOPE is a check-in the route would match, else None."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if (
            scope.get("root_path")  # mounted under a prefix: leave matching to Starlette
            or not path.startswith(self.prefix)
            or not path.endswith(self.suffix)
        ):
            return None
        host_id = path[len(self.prefix) : -len(self.suffix)]
        return host_id if host_id and "/" not in host_id else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host_id = self.host_id_of(scope)
        if host_id is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        request = Request(scope, receive)
        try:
            answer = await host_routes.check_in_answer(
                context_of(request),
                client_of(request),
                await host_scheme(request),
                host_id,
                request.body,  # read only once the token is known to be this host's
                request.headers.get("content-type", ""),
            )
            response = Response(answer, media_type="application/json")
        except Exception as exc:
            response = await self.handled(request, exc)
        await response(scope, receive, send)

    async def handled(self, request: Request, exc: Exception) -> Response:
        """The app's answer to EXC, found as Starlette's ExceptionMiddleware would; else raise."""
        for kind in type(exc).__mro__:
            if kind is Exception:  # unhandled: ServerErrorMiddleware answers 500
                break
            handler = self.handlers.get(kind)
            if handler is not None:
                answer = handler(request, exc)
                return await answer if inspect.isawaitable(answer) else answer
        raise exc
