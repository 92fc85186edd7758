"""Hosts: registration with a key, their public view and state, unregistration.

Registration and the key's host limit are one transaction. A key with a
``host_limit`` counts its hosts in ``host_count``, raised by one conditional
UPDATE only while under the limit, so concurrent registrations never overshoot
it. A key without a limit is only share-locked: thousands of hosts enrolling
with one key do not queue on that row (on PostgreSQL every holder of the row
lock would wait for the previous commit to reach the disk). Setting a limit
later takes the row exclusively and recounts (``recount_hosts``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from nonstop.server.auth import (
    HOST_PREFIX,
    KEY_PREFIX,
    new_credential,
    secret_matches,
    split_credential,
)
from nonstop.server.errors import Conflict, Forbidden, NotFound
from nonstop.server.inventory import stored_targets
from nonstop.server.models import hosts, registration_keys, utcnow
from nonstop.server.schemas import HostDetail, HostState, HostTargetView, HostView


class KeyRefused(Exception):
    """The registration key is malformed, unknown or wrong (a failed authentication)."""


def register(connection: Connection, key_token: str, hostname: str) -> tuple[str, str, str]:
    """Register a host; return (host id, host token, feed)."""
    parts = split_credential(KEY_PREFIX, key_token)
    if parts is None:
        raise KeyRefused("registration key is not valid")
    key_id, secret = parts
    key = connection.execute(
        select(registration_keys).where(registration_keys.c.id == key_id)
    ).first()
    if key is None or not secret_matches(secret, key.secret_hash):
        raise KeyRefused("registration key is not valid")
    if key.revoked_at is not None:
        raise Forbidden("registration key has been revoked")
    if key.host_limit is None:
        # Waits only for an admin changing this key; other registrations pass.
        locked = connection.execute(
            select(registration_keys.c.host_limit)
            .where(registration_keys.c.id == key.id)
            .with_for_update(read=True)
        ).one()
        if locked.host_limit is not None:
            raise Conflict("registration key changed during registration; retry")
    credential = new_credential(HOST_PREFIX)
    connection.execute(
        insert(hosts).values(
            id=credential.id,
            secret_hash=credential.secret_hash,
            registration_key_id=key.id,
            hostname=hostname,
            feed=key.feed,
            sticky=key.sticky,
            labels=key.labels,
            registered_at=utcnow(),
            checkin_count=0,
        )
    )
    if key.host_limit is not None:
        # Last in the transaction: this row lock is held for as short a time as possible.
        counted = connection.execute(
            update(registration_keys)
            .where(
                registration_keys.c.id == key.id,
                registration_keys.c.host_count < registration_keys.c.host_limit,
            )
            .values(host_count=registration_keys.c.host_count + 1)
        )
        if counted.rowcount != 1:
            raise Forbidden(f"registration key reached its limit of {key.host_limit} hosts")
    return credential.id, credential.token, key.feed


def registered_hosts(key_id: Any) -> Any:
    """SQL expression: how many registered (not unregistered) hosts came with key KEY_ID."""
    return (
        select(func.count())
        .where(hosts.c.registration_key_id == key_id, hosts.c.unregistered_at.is_(None))
        .scalar_subquery()
    )


def recount_hosts(connection: Connection, key_id: str) -> None:
    """Lock the key and make its limit counter exact (before a limit is set or changed)."""
    connection.execute(
        select(registration_keys.c.id).where(registration_keys.c.id == key_id).with_for_update()
    )
    connection.execute(
        update(registration_keys)
        .where(registration_keys.c.id == key_id)
        .values(host_count=registered_hosts(key_id))
    )


def unregister(connection: Connection, host_id: str) -> None:
    """Invalidate the host's token and forget its inventory; keep the row for audit."""
    host = connection.execute(
        update(hosts)
        .where(hosts.c.id == host_id, hosts.c.unregistered_at.is_(None))
        .values(unregistered_at=utcnow(), inventory=None, inventory_digest=None)
        .returning(hosts.c.registration_key_id)
    ).first()
    if host is None:
        raise NotFound(f"no registered host {host_id}")
    if host.registration_key_id is not None:
        connection.execute(
            update(registration_keys)
            .where(
                registration_keys.c.id == host.registration_key_id,
                registration_keys.c.host_limit.is_not(None),
            )
            .values(host_count=registration_keys.c.host_count - 1)
        )


def host_state(row: Row[Any], stale_after: timedelta, now: datetime) -> HostState:
    """The state of a hosts row at NOW: unregistered; never (no check-in yet); stale (last
    check-in older than STALE_AFTER); else active. ``metrics.HostStateCollector`` uses
    the same rule in SQL.
    """
    if row.unregistered_at is not None:
        return "unregistered"
    if row.last_checkin_at is None:
        return "never"
    return "stale" if row.last_checkin_at < now - stale_after else "active"


def host_view(row: Row[Any], stale_after: timedelta, now: datetime) -> HostView:
    """The API view of a hosts row (without its targets)."""
    values = {name: getattr(row, name) for name in HostView.model_fields if name != "state"}
    return HostView(**values, state=host_state(row, stale_after, now))


def host_detail(connection: Connection, host_id: str, stale_after: timedelta) -> HostDetail:
    """HOST_ID's view with its reported targets sorted by kind and name (none once
    unregistered); unregistered hosts included, 404 only for an unknown id.
    """
    row = connection.execute(select(hosts).where(hosts.c.id == host_id)).first()
    if row is None:
        raise NotFound(f"no host {host_id}")
    targets = sorted(stored_targets(row.inventory), key=lambda t: (t.kind, t.name))
    view = host_view(row, stale_after, utcnow())
    return HostDetail(
        **view.model_dump(),
        targets=[
            HostTargetView(
                target=t.target_key,
                kind=t.kind,
                name=t.name,
                package_name=t.package_name,
                package_version=t.package_version,
                processes=t.processes,
                applied_level=t.applied_level,
            )
            for t in targets
        ],
    )
