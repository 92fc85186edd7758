"""Admin: registration keys (create, list, read, change, revoke)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import Connection, insert, select, update

from nonstop.server import audit
from nonstop.server.api.common import ADMIN_ERRORS, ensure_feed
from nonstop.server.api.deps import Admin, Ctx, require_scope
from nonstop.server.auth import KEY_PREFIX, new_credential
from nonstop.server.errors import NotFound
from nonstop.server.hosts import recount_hosts, registered_hosts
from nonstop.server.models import registration_keys, utcnow
from nonstop.server.schemas import KeyCreate, KeyCreated, KeyUpdate, KeyView

router = APIRouter(prefix="/api/v1/admin/keys", tags=["admin: keys"], responses=ADMIN_ERRORS)
Reader = Annotated[Admin, Depends(require_scope("keys:read"))]
Writer = Annotated[Admin, Depends(require_scope("keys:write"))]


_KEYS = select(
    *(c for c in registration_keys.c if c.name != "host_count"),
    registered_hosts(registration_keys.c.id).label("host_count"),
)


def _view(row: Any) -> KeyView:
    return KeyView(**{name: getattr(row, name) for name in KeyView.model_fields})


def _get(connection: Connection, key_id: str) -> Any:
    row = connection.execute(_KEYS.where(registration_keys.c.id == key_id)).first()
    if row is None:
        raise NotFound(f"no registration key {key_id}")
    return row


@router.post("", status_code=201, response_model=KeyCreated)
def create_key(body: KeyCreate, ctx: Ctx, admin: Writer) -> KeyCreated:
    """Create a registration key; the key itself is in this answer only."""
    credential = new_credential(KEY_PREFIX)
    with ctx.db.write() as connection:
        ensure_feed(connection, body.feed)
        connection.execute(
            insert(registration_keys).values(
                id=credential.id,
                name=body.name,
                secret_hash=credential.secret_hash,
                feed=body.feed,
                sticky=body.sticky,
                labels=body.labels,
                host_limit=body.host_limit,
                host_count=0,
                created_at=utcnow(),
            )
        )
        audit.record(
            connection, admin.actor, "key.create", credential.id, body.model_dump(mode="json")
        )
        row = _get(connection, credential.id)
    return KeyCreated(**_view(row).model_dump(), key=credential.token)


@router.get("", response_model=list[KeyView])
def list_keys(ctx: Ctx, admin: Reader) -> list[KeyView]:
    """All registration keys, revoked ones included, oldest first (never the keys themselves)."""
    with ctx.db.read() as connection:
        rows = connection.execute(_KEYS.order_by(registration_keys.c.created_at))
        return [_view(row) for row in rows]


@router.get("/{key_id}", response_model=KeyView)
def read_key(key_id: str, ctx: Ctx, admin: Reader) -> KeyView:
    """One registration key (never the key itself)."""
    with ctx.db.read() as connection:
        return _view(_get(connection, key_id))


@router.patch("/{key_id}", response_model=KeyView)
def update_key(key_id: str, body: KeyUpdate, ctx: Ctx, admin: Writer) -> KeyView:
    """Change a key's feed, pin, labels or host limit (for hosts registered from now on)."""
    changes = body.model_dump(exclude_unset=True)
    for required in ("feed", "labels"):  # null means "no change" for these
        if changes.get(required, 0) is None:
            del changes[required]
    with ctx.db.write() as connection:
        _get(connection, key_id)
        if "feed" in changes:
            ensure_feed(connection, changes["feed"])
        if changes.get("host_limit") is not None:
            recount_hosts(connection, key_id)
        if changes:
            connection.execute(
                update(registration_keys).where(registration_keys.c.id == key_id).values(**changes)
            )
            audit.record(connection, admin.actor, "key.update", key_id, changes)
        return _view(_get(connection, key_id))


@router.post("/{key_id}/revoke", response_model=KeyView)
def revoke_key(key_id: str, ctx: Ctx, admin: Writer) -> KeyView:
    """Revoke a key: no new registrations with it; hosts already registered keep working."""
    with ctx.db.write() as connection:
        row = _get(connection, key_id)
        if row.revoked_at is None:
            connection.execute(
                update(registration_keys)
                .where(registration_keys.c.id == key_id)
                .values(revoked_at=utcnow())
            )
            audit.record(connection, admin.actor, "key.revoke", key_id, {"name": row.name})
        return _view(_get(connection, key_id))
