"""Request dependencies: the server context, the client address, host and admin identity.

A refused credential counts as a failed authentication twice: for the client
address and for the credential presented (its public id, never its secret).
Past the limit, a credential gets 429 until the window ends, right or wrong
(a brute force on it must not learn when it guessed right); an address gets
429 instead of 401 for each further failure, while valid credentials from it
are still served: behind a reverse proxy without ``--forwarded-allow-ips``
every client shares the proxy's address, and bad tokens from one must not
lock out the fleet and its admins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, cast

import psycopg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Row, bindparam, select
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from nonstop.server.auth import (
    ADMIN_PREFIX,
    HOST_PREFIX,
    credential_key,
    scope_granted,
    secret_matches,
    split_credential,
)
from nonstop.server.context import ServerContext
from nonstop.server.errors import Forbidden, TooManyRequests, Unauthorized
from nonstop.server.metrics import AUTH_FAILURES
from nonstop.server.models import admin_tokens, hosts

host_scheme = HTTPBearer(
    scheme_name="HostToken", description="host token from registration", auto_error=False
)
admin_scheme = HTTPBearer(
    scheme_name="AdminToken", description="admin API token with scopes", auto_error=False
)
Credentials = HTTPAuthorizationCredentials | None


def context_of(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def client_of(request: Request) -> str:
    """The client's address, the key of the per-address limits; behind a proxy trusted
    with ``--forwarded-allow-ips`` it is the forwarded address (uvicorn sets it).
    """
    return request.client.host if request.client else "unknown"


# Trivial dependencies are async so FastAPI runs them inline instead of in a worker thread.
# (The check-in, the hottest endpoint, calls context_of and client_of itself: every
# dependency costs FastAPI a resolution step per request.)
async def get_ctx(request: Request) -> ServerContext:
    return context_of(request)


Ctx = Annotated[ServerContext, Depends(get_ctx)]


async def client_address(request: Request) -> str:
    return client_of(request)


Client = Annotated[str, Depends(client_address)]


def guard_credential(ctx: ServerContext, credential: str) -> None:
    """429 while CREDENTIAL (a ``credential_key``) is over its failed-authentication allowance."""
    if ctx.credential_failures.exhausted(credential):
        raise TooManyRequests(
            "too many failed authentication attempts with this credential",
            ctx.credential_failures.retry_after(credential),
        )


def refuse(
    ctx: ServerContext, client: str, kind: str, detail: str, credential: str | None
) -> NoReturn:
    """Count a failed authentication for CLIENT and CREDENTIAL (None: none well-formed)."""
    AUTH_FAILURES.labels(kind).inc()
    if credential is not None:
        ctx.credential_failures.hit(credential)
    if not ctx.auth_failures.hit(client):
        raise TooManyRequests(
            "too many failed authentication attempts from this address",
            ctx.auth_failures.retry_after(client),
        )
    raise Unauthorized(detail)


_HOST_BY_ID = select(
    hosts.c.id,
    hosts.c.secret_hash,
    hosts.c.feed,
    hosts.c.sticky,
    hosts.c.unregistered_at,
    hosts.c.packages_digest,
).where(hosts.c.id == bindparam("host_id"))
# The same query for the check-in's asyncio psycopg connection (db.autocommit_async).
_HOST_BY_ID_SQL = str(_HOST_BY_ID.compile(dialect=psycopg_dialect()))  # type: ignore[no-untyped-call]


def host_credential(ctx: ServerContext, client: str, credentials: Credentials) -> tuple[str, str]:
    """(host id, secret) of a well-formed host token, else 401 (429 past the failure limits)."""
    parts = split_credential(HOST_PREFIX, credentials.credentials) if credentials else None
    if parts is None:
        message = "a host token is required (Authorization: Bearer nsh_...)"
        refuse(ctx, client, "host", message, None)
    guard_credential(ctx, credential_key(HOST_PREFIX, parts[0]))
    return parts


def refuse_host(ctx: ServerContext, client: str, host_id: str) -> NoReturn:
    """Refuse HOST_ID's token: 401 (429 past the limits), counted for CLIENT and the token."""
    refuse(ctx, client, "host", "host token is not valid", credential_key(HOST_PREFIX, host_id))


def _verified(ctx: ServerContext, client: str, row: Any, host_id: str, secret: str) -> Any:
    if (
        row is None
        or row.unregistered_at is not None
        or not secret_matches(secret, row.secret_hash)
    ):
        refuse_host(ctx, client, host_id)
    return row


def authenticate_host(
    ctx: ServerContext, connection: Connection, client: str, credentials: Credentials
) -> Row[Any]:
    """The host row (id, feed, sticky, package list digest) of a valid host token, else 401."""
    host_id, secret = host_credential(ctx, client, credentials)
    row = connection.execute(_HOST_BY_ID, {"host_id": host_id}).first()
    return cast(Row[Any], _verified(ctx, client, row, host_id, secret))


async def authenticate_host_async(
    ctx: ServerContext,
    connection: psycopg.AsyncConnection[Any],
    client: str,
    credentials: Credentials,
) -> Any:
    """As ``authenticate_host``, on an asyncio psycopg connection."""
    host_id, secret = host_credential(ctx, client, credentials)
    async with connection.cursor(row_factory=namedtuple_row) as cursor:
        await cursor.execute(_HOST_BY_ID_SQL, {"host_id": host_id}, prepare=True)
        row = await cursor.fetchone()
    return _verified(ctx, client, row, host_id, secret)


def require_same_host(row: Any, host_id: str) -> None:
    """403 unless ROW, an authenticated host, is HOST_ID: a host token reaches its own host only."""
    if row.id != host_id:
        raise Forbidden("a host token gives access to its own host only")


def current_host(
    ctx: Ctx, client: Client, credentials: Annotated[Credentials, Depends(host_scheme)]
) -> Row[Any]:
    """The authenticated host's row (``authenticate_host`` in a read transaction): a dependency."""
    with ctx.db.read() as connection:
        return authenticate_host(ctx, connection, client, credentials)


HostRow = Annotated[Row[Any], Depends(current_host)]


@dataclass(frozen=True)
class Admin:
    """The admin token a request was authenticated with: its id, name and granted scopes."""

    token_id: str
    name: str
    scopes: list[str]

    @property
    def actor(self) -> str:
        """How the audit log and uploads name this admin: token name, first 8 hex digits of id."""
        return f"token:{self.name}:{self.token_id[:8]}"


def require_scope(scope: str) -> Callable[..., Admin]:
    """A dependency: the admin behind the request's token, which must hold SCOPE."""

    def dependency(
        ctx: Ctx, client: Client, credentials: Annotated[Credentials, Depends(admin_scheme)]
    ) -> Admin:
        parts = split_credential(ADMIN_PREFIX, credentials.credentials) if credentials else None
        if parts is None:
            message = "an admin token is required (Authorization: Bearer nsa_...)"
            refuse(ctx, client, "admin", message, None)
        token_id, secret = parts
        credential = credential_key(ADMIN_PREFIX, token_id)
        guard_credential(ctx, credential)
        with ctx.db.read() as connection:
            row = connection.execute(
                select(admin_tokens).where(admin_tokens.c.id == token_id)
            ).first()
        if row is None or row.revoked_at is not None or not secret_matches(secret, row.secret_hash):
            refuse(ctx, client, "admin", "admin token is not valid", credential)
        if not scope_granted(row.scopes, scope):
            raise Forbidden(f"this admin token lacks the {scope} scope")
        return Admin(row.id, row.name, list(row.scopes))

    return dependency
