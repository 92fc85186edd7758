"""Admin: bundles (upload, list, read, download, retire)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from nonstop.server import bundles
from nonstop.server.api.common import ADMIN_ERRORS, bundle_file, errors
from nonstop.server.api.deps import Admin, Ctx, require_scope
from nonstop.server.context import ServerContext
from nonstop.server.schemas import BundleDetail, BundleList, Sha256

router = APIRouter(prefix="/api/v1/admin/bundles", tags=["admin: bundles"], responses=ADMIN_ERRORS)
Reader = Annotated[Admin, Depends(require_scope("bundles:read"))]
Writer = Annotated[Admin, Depends(require_scope("bundles:write"))]
UPLOAD_PATH = "/api/v1/admin/bundles"


def _store(ctx: ServerContext, data: bytes, actor: str) -> tuple[BundleDetail, bool]:
    with ctx.db.write() as connection:
        result = bundles.upload(connection, ctx.blobs, ctx.vendor_keys, data, actor)
    ctx.catalog.invalidate()
    return result


@router.post(
    "",
    status_code=201,
    response_model=BundleDetail,
    openapi_extra={"requestBody": {"required": True, "content": bundle_file("")[200]["content"]}},
    responses={
        200: {"model": BundleDetail, "description": "these exact bytes were uploaded before"},
        **errors(e409="the target already has a bundle at this level"),
    },
)
async def upload_bundle(
    request: Request, response: Response, ctx: Ctx, admin: Writer
) -> BundleDetail:
    """Upload a signed bundle (the raw file as the body); it is verified before it is stored."""
    data = await request.body()
    stored, created = await run_in_threadpool(_store, ctx, data, admin.actor)
    response.status_code = 201 if created else 200
    return stored


@router.get("", response_model=BundleList)
def list_bundles(
    ctx: Ctx,
    admin: Reader,
    kind: Literal["userspace", "kernel"] | None = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
    include_retired: bool = False,
) -> BundleList:
    """Bundles by target and level, optionally of one kind or one target key."""
    with ctx.db.read() as connection:
        return BundleList(bundles=bundles.listing(connection, kind, target, include_retired))


@router.get("/{sha256}", response_model=BundleDetail)
def read_bundle(sha256: Sha256, ctx: Ctx, admin: Reader) -> BundleDetail:
    """A bundle's index entry and its signed manifest, retired or not."""
    with ctx.db.read() as connection:
        return bundles.detail(bundles.get_row(connection, sha256))


@router.get(
    "/{sha256}/content",
    response_class=Response,
    responses=bundle_file("the bundle file, retired or not"),
)
def bundle_content(sha256: Sha256, ctx: Ctx, admin: Reader) -> Response:
    """The stored bundle file, for audit (retired bundles included)."""
    with ctx.db.read() as connection:
        bundles.get_row(connection, sha256)
        data = bundles.bundle_bytes(ctx.blobs, connection, sha256)
    return Response(data, media_type="application/octet-stream", headers={"ETag": f'"{sha256}"'})


@router.post("/{sha256}/retire", response_model=BundleDetail)
def retire_bundle(sha256: Sha256, ctx: Ctx, admin: Writer) -> BundleDetail:
    """Stop offering a bundle; it stays stored and listed (include_retired) for audit."""
    with ctx.db.write() as connection:
        retired = bundles.retire(connection, sha256, admin.actor)
    ctx.catalog.invalidate()
    return retired
