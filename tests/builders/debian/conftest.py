"""Real Debian source packages, fetched through apt once and kept in the cache outside the checkout.

The tests add deb-src entries themselves (``enable_deb_src``, idempotent) and
fetch into ``cache_dir("debian")`` (``~/.cache/nonstop/debian``), so that CI and
later runs reuse what an earlier run fetched.
"""

from __future__ import annotations

import os
import shutil

import pytest

from nonstop.builders.cache import cache_dir
from nonstop.builders.debian.sources import SourcePackage, fetch_source

# Pinned versions: their changelogs and patches never change, so the tests assert their content.
LIBXML2_OLD = "2.9.14+dfsg-1.3~deb12u4"
LIBXML2_NEW = "2.9.14+dfsg-1.3~deb12u6"
EXPAT_OLD = "2.5.0-1+deb12u2"
EXPAT_NEW = "2.5.0-1+deb12u3"
"""Not in apt's index (which lists deb12u5, whose source files the archive does not serve):
only the security archive's pool has it."""
EXPAT_SIGNER = "83DCD17F44B22CC83656EDA1E8446B4AC8C77261"
"""The key that signed the deb12u3 .dsc: in debian-keyring.gpg, expired there on 2024-04-01,
before it signed (2026-08-31); accepted only with --trust-expired-key."""


def needs_apt() -> None:
    missing = [tool for tool in ("apt-get", "apt-cache", "dpkg-source") if not shutil.which(tool)]
    if missing:
        pytest.skip(reason=f"tool missing: {', '.join(missing)} (scripts/install-system-deps.sh)")
    if os.geteuid() != 0:
        pytest.skip(reason="not root: adding deb-src entries to apt's sources needs root")


@pytest.fixture(scope="session")
def libxml2() -> tuple[SourcePackage, SourcePackage]:
    """libxml2 at LIBXML2_OLD and LIBXML2_NEW, from the cache or through apt."""
    needs_apt()
    cache = cache_dir("debian")
    return fetch_source("libxml2", LIBXML2_OLD, cache), fetch_source("libxml2", LIBXML2_NEW, cache)
