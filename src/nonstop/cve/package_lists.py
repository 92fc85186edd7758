"""A host's installed-package list in the one form agent and server both hash.

The list is long (about 2,000 packages on a server) and rarely changes, so a
check-in carries its digest every time and the list itself only when the
server does not hold that digest yet. Both sides compute the digest here, from
the canonical form: the package manager's name and the packages sorted, each
``[name, version, source, source_version, arch]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from nonstop.cve.model import InstalledPackage

MANAGERS = ("dpkg", "rpm")
MAX_PACKAGES = 20_000
"""More than any real host has installed (a full desktop has about 5,000)."""

PackageRow = tuple[str, str, str, str, str]
"""``(name, version, source, source_version, arch)``: a package as the check-in carries it."""


def canonical_rows(packages: Iterable[InstalledPackage]) -> list[PackageRow]:
    """PACKAGES as sorted rows, each once."""
    return sorted({(p.name, p.version, p.source, p.source_version, p.arch) for p in packages})


def packages_digest(manager: str, rows: list[PackageRow]) -> str:
    """SHA-256 (hex) of MANAGER and ROWS in canonical form (ROWS sorted, as canonical_rows)."""
    text = json.dumps([manager, rows], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def from_rows(rows: Iterable[PackageRow]) -> tuple[InstalledPackage, ...]:
    """Rows back into records."""
    return tuple(InstalledPackage(*row) for row in rows)


def list_digest(manager: str, packages: Iterable[InstalledPackage]) -> str:
    """The digest of PACKAGES as MANAGER lists them (``packages_digest`` of their rows)."""
    return packages_digest(manager, canonical_rows(packages))
