"""A host's inventory as the server keeps it: one row per target, stored as one JSON text.

The check-in turns the agent's report (kernel + libraries) into ``TargetRow``s;
they are stored in ``hosts.inventory`` as a JSON array with one array per
target, its values in ``TargetRow``'s field order (half the size of objects
keyed by field name, and parsed 2.7 times faster), with a digest so an
unchanged inventory is not rewritten. Host detail, download authorization and
the per-target report read them back with ``stored_targets``. Changing the
fields therefore takes a migration that rewrites the stored inventories.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any, NamedTuple

from pydantic_core import to_json

from nonstop.bundle.manifest import KernelTarget, UserspaceTarget
from nonstop.server.schemas import CheckinRequest


class TargetRow(NamedTuple):
    """One target of the inventory, as stored in hosts.inventory (a tuple: cheap to build)."""

    target_key: str
    alt_target_key: str | None
    kind: str
    name: str
    package_name: str | None
    package_version: str | None
    processes: int
    applied_level: int | None
    # Added at revision 0005; inventories stored before have no value for them (the defaults).
    source_version: str | None = None
    """The kernel's distribution source version (from /proc/version)."""
    deleted: bool = False
    """The library file was replaced on disk: its processes run an older copy."""
    unpatched: tuple[tuple[int, str], ...] = ()
    """(pid, name) of processes running the library unpatched (at most 32 named)."""
    partial_level: int | None = None
    """While some processes run the library unpatched: the level the others run."""

    def identities(self) -> tuple[str, ...]:
        """Every key a bundle for this target may name (a kernel has two)."""
        if self.alt_target_key is None:
            return (self.target_key,)
        return (self.target_key, self.alt_target_key)


def inventory_targets(request: CheckinRequest) -> list[TargetRow]:
    """The kernel and every library, one row per target (duplicate build-ids merged)."""
    rows: list[TargetRow] = []
    kernel = request.kernel
    if kernel is not None:
        identity = KernelTarget(
            release=kernel.release, build_id=kernel.build_id, version_digest=kernel.version_digest
        )
        alt = None
        if kernel.build_id and kernel.version_digest:
            alt = KernelTarget(release=kernel.release, version_digest=kernel.version_digest).key
        rows.append(
            TargetRow(
                identity.key,
                alt,
                "kernel",
                kernel.release,
                None,
                None,
                0,
                kernel.applied_level,
                source_version=kernel.source_version,
            )
        )
    merged: dict[str, TargetRow] = {}
    for lib in request.libraries:
        key = _userspace_key(lib.build_id)
        seen = merged.get(key)
        levels = [level for level in (lib.applied_level, seen and seen.applied_level) if level]
        merged[key] = TargetRow(
            target_key=key,
            alt_target_key=None,
            kind="userspace",
            name=lib.soname,
            package_name=lib.package.name if lib.package else None,
            package_version=lib.package.version if lib.package else None,
            processes=lib.processes + (seen.processes if seen else 0),
            # Some processes may lag behind: report the lowest level so the upgrade is offered.
            applied_level=min(levels) if levels else None,
            deleted=lib.deleted or bool(seen and seen.deleted),
            partial_level=lib.partial_level or (seen.partial_level if seen else None),
            unpatched=(
                *(seen.unpatched if seen else ()),
                *((process.pid, process.name) for process in lib.unpatched),
            ),
        )
    rows.extend(merged.values())
    return rows


@lru_cache(maxsize=65536)  # a fleet runs few distinct library builds
def _userspace_key(build_id: str) -> str:
    return UserspaceTarget(build_id=build_id, soname="").key


def inventory_json(targets: list[TargetRow]) -> bytes:
    """The targets as stored: a JSON array of arrays (pydantic-core writes tuples so)."""
    return to_json(targets)


def inventory_digest(targets_json: bytes) -> str:
    """Identifies the stored inventory, so an unchanged one is not rewritten."""
    return hashlib.sha256(targets_json).hexdigest()


def stored_targets(inventory: str | None) -> list[TargetRow]:
    """The targets in a hosts.inventory value (None: no check-in yet, or unregistered)."""
    if inventory is None:
        return []
    return [_row(entry) for entry in json.loads(inventory)]


def _row(entry: list[Any]) -> TargetRow:
    row = TargetRow(*entry)
    if row.unpatched:  # JSON gave lists: back to the tuples the field holds
        row = row._replace(unpatched=tuple((pid, name) for pid, name in row.unpatched))
    return row
