"""Host endpoints: register, check in, read itself, download bundles, unregister.

Every endpoint but registration takes the host's bearer token, and a host
token reaches only its own host and only bundles for targets it reported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from nonstop.server import checkin, hosts
from nonstop.server.api.common import (
    COMMON_ERRORS,
    bundle_file,
    errors,
    json_body_doc,
    parse_json,
)
from nonstop.server.api.deps import (
    Client,
    Credentials,
    Ctx,
    HostRow,
    authenticate_host,
    authenticate_host_async,
    client_of,
    context_of,
    current_host,
    guard_credential,
    host_credential,
    host_scheme,
    refuse,
    refuse_host,
    require_same_host,
)
from nonstop.server.auth import (
    HOST_PREFIX,
    KEY_PREFIX,
    credential_key,
    hash_secret,
    split_credential,
)
from nonstop.server.bundles import authorize_download, bundle_bytes
from nonstop.server.context import ServerContext
from nonstop.server.errors import TooManyRequests, Unauthorized
from nonstop.server.metrics import CHECKINS, DOWNLOADS, REGISTRATIONS
from nonstop.server.models import utcnow
from nonstop.server.schemas import (
    CheckinRequest,
    CheckinResponse,
    HostDetail,
    RegisterRequest,
    RegisterResponse,
    Sha256,
)

AUTH_ERRORS = COMMON_ERRORS | errors(
    e401="missing or invalid host token", e403="the token belongs to another host"
)
router = APIRouter(prefix="/api/v1", tags=["hosts"], responses=AUTH_ERRORS)
HostCredentials = Annotated[Credentials, Depends(host_scheme)]
IMMUTABLE = "public, max-age=31536000, immutable"


@router.post(
    "/hosts/register",
    status_code=201,
    response_model=RegisterResponse,
    responses=errors(e401="registration key not valid", e403="key revoked or at its limit"),
)
def register_host(body: RegisterRequest, ctx: Ctx, client: Client) -> RegisterResponse:
    """Register a host with a registration key; the answer carries its token, shown once."""
    parts = split_credential(KEY_PREFIX, body.registration_key)
    credential = credential_key(KEY_PREFIX, parts[0]) if parts else None
    if credential is not None:
        guard_credential(ctx, credential)
    if not ctx.registrations.hit(client):
        REGISTRATIONS.labels("rate_limited").inc()
        raise TooManyRequests(
            "too many registrations from this address", ctx.registrations.retry_after(client)
        )
    try:
        with ctx.db.write() as connection:
            host_id, token, feed = hosts.register(connection, body.registration_key, body.hostname)
    except hosts.KeyRefused as exc:
        REGISTRATIONS.labels("refused").inc()
        refuse(ctx, client, "registration_key", str(exc), credential)
    _, secret = split_credential(HOST_PREFIX, token) or ("", "")
    ctx.known_hosts.remember(host_id, hash_secret(secret))  # its first check-in is coming
    REGISTRATIONS.labels("ok").inc()
    return RegisterResponse(
        host_id=host_id,
        token=token,
        feed=feed,
        checkin_interval_seconds=ctx.settings.checkin_interval_seconds,
    )


@router.post(
    "/hosts/{host_id}/checkin",
    response_model=CheckinResponse,
    openapi_extra=json_body_doc(CheckinRequest),
)
async def check_in(host_id: str, request: Request, credentials: HostCredentials) -> Response:
    """Report the host's inventory; learn, per target, the bundle to apply or none."""
    # Normally answered by CheckinFastPath (checkin_path.py) before FastAPI routing: this
    # route documents the endpoint and serves it only if the fast path lets a request by.
    answer = await check_in_answer(
        context_of(request),
        client_of(request),
        credentials,
        host_id,
        request.body,
        request.headers.get("content-type", ""),
    )
    return Response(answer, media_type="application/json")


async def check_in_answer(
    ctx: ServerContext,
    client: str,
    credentials: Credentials,
    host_id: str,
    read_body: Callable[[], Awaitable[bytes]],
    content_type: str,
) -> bytes:
    """The check-in's JSON answer; ``ApiError`` or ``RequestValidationError`` if refused.

    The token is checked before the body is read: a client without a valid token for
    HOST_ID gets 401 (or 403, 429) and the server neither waits for nor parses its body.
    """
    secret = await _authenticate(ctx, client, credentials, host_id)
    body = parse_json(await read_body(), content_type, CheckinRequest)
    catalog = ctx.catalog.fresh()
    if catalog is None:  # stale: re-read it without blocking the event loop
        catalog = await run_in_threadpool(ctx.catalog.snapshot)
    if ctx.db.is_sqlite:
        host, stored, findings = await run_in_threadpool(
            _record_sqlite, ctx, client, credentials, host_id, body
        )
    else:
        host, stored = await _record_postgresql(ctx, client, host_id, secret, body)
        findings = await run_in_threadpool(_follow_findings, ctx, host_id, body, stored)
    CHECKINS.labels("recorded" if stored.recorded else "replayed").inc()
    return checkin.answer(
        host,
        body,
        stored.targets,
        catalog,
        stored.recorded,
        ctx.settings.checkin_interval_seconds,
        utcnow(),
        stored.packages_digest,
        findings,
    )


async def _authenticate(
    ctx: ServerContext, client: str, credentials: Credentials, host_id: str
) -> str:
    """The token's secret; 401 unless the token is valid (429 past the failure limits),
    403 unless it is HOST_ID's. Known hosts are told without a database read."""
    token_host, secret = host_credential(ctx, client, credentials)
    if token_host == host_id and ctx.known_hosts.matches(host_id, secret):
        return secret
    if ctx.db.is_sqlite:
        host = await run_in_threadpool(current_host, ctx, client, credentials)
    else:
        async with ctx.db.autocommit_async() as connection:
            host = await authenticate_host_async(ctx, connection, client, credentials)
    require_same_host(host, host_id)
    ctx.known_hosts.remember(host.id, host.secret_hash)
    return secret


async def _record_postgresql(
    ctx: ServerContext, client: str, host_id: str, secret: str, body: CheckinRequest
) -> tuple[Any, checkin.Recorded]:
    """Store in one statement that authenticates again (the host may have been unregistered
    since): one round trip to PostgreSQL."""
    async with ctx.db.autocommit_async() as connection:
        host, targets = await checkin.record_postgresql(connection, host_id, secret, body)
    if host is None:
        ctx.known_hosts.forget(host_id)
        refuse_host(ctx, client, host_id)
    return host, checkin.Recorded(host.recorded, targets, host.packages_digest)


def _record_sqlite(
    ctx: ServerContext, client: str, credentials: Credentials, host_id: str, body: CheckinRequest
) -> tuple[Any, checkin.Recorded, str]:
    """Authenticate again and store in one write transaction (in a worker thread: SQLite
    blocks); the host may have been unregistered since ``_authenticate``. Then follow the
    host's findings (outside the write transaction)."""
    with ctx.db.write() as connection:
        try:
            host = authenticate_host(ctx, connection, client, credentials)
        except Unauthorized:
            ctx.known_hosts.forget(host_id)
            raise
        require_same_host(host, host_id)
        stored = checkin.record(ctx.db, connection, host, body)
    return host, stored, _follow_findings(ctx, host_id, body, stored)


def _follow_findings(
    ctx: ServerContext, host_id: str, body: CheckinRequest, stored: checkin.Recorded
) -> str:
    """Update this process's fleet findings; the digest of the host's findings' inputs."""
    return ctx.vulnerabilities.checkin(
        host_id,
        body.hostname,
        body.os.id,
        body.os.version_id,
        stored.targets,
        stored.packages_digest,
    )


@router.get("/hosts/{host_id}", response_model=HostDetail)
def read_host(host_id: str, ctx: Ctx, host: HostRow) -> HostDetail:
    """The host's own record as the server sees it: feed, pin, targets, last check-in."""
    require_same_host(host, host_id)
    with ctx.db.read() as connection:
        return hosts.host_detail(connection, host_id, timedelta(days=ctx.settings.stale_after_days))


@router.delete("/hosts/{host_id}", status_code=204, response_class=Response)
def unregister_host(host_id: str, ctx: Ctx, host: HostRow) -> Response:
    """Unregister this host: its token stops working and its inventory is dropped."""
    require_same_host(host, host_id)
    with ctx.db.write() as connection:
        hosts.unregister(connection, host_id)
    return Response(status_code=204)


@router.get(
    "/bundles/{sha256}",
    response_class=Response,
    responses={
        **bundle_file("the bundle file; verify it before use"),
        304: {"description": "unchanged (If-None-Match)"},
        **errors(
            e403="not a bundle for this host's targets", e404="no such bundle", e410="retired"
        ),
    },
)
def download_bundle(sha256: Sha256, request: Request, ctx: Ctx, host: HostRow) -> Response:
    """Download a bundle for one of this host's targets (strong ETag, immutable)."""
    etag = f'"{sha256}"'
    with ctx.db.read() as connection:
        authorize_download(connection, host.id, sha256)
        if request.headers.get("if-none-match") in (etag, f"W/{etag}"):
            DOWNLOADS.labels("not_modified").inc()
            return Response(status_code=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE})
        data = bundle_bytes(ctx.blobs, connection, sha256)
    DOWNLOADS.labels("ok").inc()
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "ETag": etag,
            "Cache-Control": IMMUTABLE,
            "Content-Disposition": f'attachment; filename="{sha256}.nsb"',
        },
    )
