"""Bundles on the server: verified upload, content-addressed storage, index, retire, download.

An upload is verified with ``nonstop.bundle.open_bundle`` against the vendor
public keys configured on the server before anything is stored; the server
never holds a signing key. A bundle is indexed by kind, target key (the
manifest's ``target.key``) and level; one target has at most one bundle per
level. Retiring hides a bundle from check-ins and host downloads but keeps it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from nonstop.bundle import BundleError, TrustedKeys, open_bundle
from nonstop.server import audit
from nonstop.server.blobstore import BlobStore
from nonstop.server.errors import BadRequest, Conflict, Forbidden, Gone, NotFound
from nonstop.server.inventory import stored_targets
from nonstop.server.models import bundles, hosts, utcnow
from nonstop.server.schemas import BundleDetail, BundleView


def view(row: Row[Any]) -> BundleView:
    """The API view of a bundles row (without its manifest)."""
    return BundleView(
        sha256=row.sha256,
        kind=row.kind,
        target=row.target_key,
        target_name=row.target_name,
        level=row.level,
        key_id=row.key_id,
        size=row.size,
        effective_version=row.effective_version,
        cves=row.cves,
        published_at=row.published_at,
        retired_at=row.retired_at,
        uploaded_by=row.uploaded_by,
    )


def detail(row: Row[Any]) -> BundleDetail:
    return BundleDetail(**view(row).model_dump(), manifest=row.manifest)


def get_row(connection: Connection, sha256: str) -> Row[Any]:
    """The bundles row of SHA256, retired or not; 404 if there is none."""
    row = connection.execute(select(bundles).where(bundles.c.sha256 == sha256)).first()
    if row is None:
        raise NotFound(f"no bundle {sha256}")
    return row


def upload(
    connection: Connection, blobs: BlobStore, vendor_keys: TrustedKeys, data: bytes, actor: str
) -> tuple[BundleDetail, bool]:
    """Verify and store DATA; (the bundle, True if new). The same bytes again are a no-op."""
    if len(vendor_keys) == 0:
        raise BadRequest("the server has no vendor public keys configured; it cannot verify")
    try:
        bundle = open_bundle(data, vendor_keys)
    except BundleError as exc:
        raise BadRequest(f"bundle refused: {exc}") from None
    existing = connection.execute(select(bundles).where(bundles.c.sha256 == bundle.sha256)).first()
    if existing is not None:
        return detail(existing), False
    manifest = bundle.manifest
    target_key = manifest.target.key
    clash = connection.execute(
        select(bundles.c.sha256).where(
            bundles.c.target_key == target_key, bundles.c.level == manifest.level
        )
    ).scalar()
    if clash is not None:
        raise Conflict(f"target {target_key} already has level {manifest.level}: bundle {clash}")
    blobs.put(connection, bundle.sha256, data)
    target_name = manifest.target.describe()
    try:
        connection.execute(
            insert(bundles).values(
                sha256=bundle.sha256,
                kind=manifest.kind,
                target_key=target_key,
                target_name=target_name[:255],
                level=manifest.level,
                key_id=bundle.key_id,
                size=len(data),
                effective_version=manifest.effective_version[:255],
                cves=manifest.cves,
                manifest=json.loads(bundle.manifest_bytes),
                published_at=utcnow(),
                uploaded_by=actor,
            )
        )
    except IntegrityError:
        raise Conflict(
            f"target {target_key} level {manifest.level} was uploaded concurrently"
        ) from None
    audit.record(
        connection,
        actor,
        "bundle.upload",
        bundle.sha256,
        {"target": target_key, "level": manifest.level, "key_id": bundle.key_id},
    )
    return detail(get_row(connection, bundle.sha256)), True


def retire(connection: Connection, sha256: str, actor: str) -> BundleDetail:
    """Retire a bundle: 404 if unknown. Idempotent: a retired bundle keeps its first
    retired_at and only the first retirement is audited. The caller invalidates the catalog.
    """
    row = get_row(connection, sha256)
    if row.retired_at is None:
        connection.execute(
            update(bundles).where(bundles.c.sha256 == sha256).values(retired_at=utcnow())
        )
        audit.record(
            connection,
            actor,
            "bundle.retire",
            sha256,
            {"target": row.target_key, "level": row.level},
        )
    return detail(get_row(connection, sha256))


def listing(
    connection: Connection, kind: str | None, target: str | None, include_retired: bool
) -> list[BundleView]:
    """Bundles in (target key, level) order, filtered by KIND and TARGET key when given;
    retired ones only with INCLUDE_RETIRED.
    """
    query = select(bundles).order_by(bundles.c.target_key, bundles.c.level)
    if kind:
        query = query.where(bundles.c.kind == kind)
    if target:
        query = query.where(bundles.c.target_key == target)
    if not include_retired:
        query = query.where(bundles.c.retired_at.is_(None))
    return [view(row) for row in connection.execute(query)]


def authorize_download(connection: Connection, host_id: str, sha256: str) -> None:
    """A host may download a live bundle only for a target it reported at check-in."""
    row = connection.execute(
        select(bundles.c.target_key, bundles.c.retired_at).where(bundles.c.sha256 == sha256)
    ).first()
    if row is None:
        raise NotFound(f"no bundle {sha256}")
    if row.retired_at is not None:
        raise Gone(f"bundle {sha256} has been retired")
    inventory = connection.execute(
        select(hosts.c.inventory).where(hosts.c.id == host_id)
    ).scalar_one_or_none()
    if not any(row.target_key in target.identities() for target in stored_targets(inventory)):
        raise Forbidden("this bundle is not for any target this host reported")


def bundle_bytes(blobs: BlobStore, connection: Connection, sha256: str) -> bytes:
    """The stored file of an indexed bundle (retired or not: callers check);
    404 if the blob store has lost it.
    """
    data = blobs.get(connection, sha256)
    if data is None:
        raise NotFound(f"bundle {sha256} is indexed but its bytes are missing from the blob store")
    return data
