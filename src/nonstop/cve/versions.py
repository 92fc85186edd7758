"""Package versions compared as the package manager compares them, never as strings.

Debian versions go through python-debian (dpkg's algorithm: epochs, ``~``
sorting before everything); RPM versions through univers' rpmvercmp port.
Parsed versions are cached by their text, because a fleet repeats the same few
thousand versions millions of times.
"""

from __future__ import annotations

from functools import lru_cache

from debian.debian_support import Version as DebianVersion
from univers.versions import InvalidVersion, RpmVersion

MAX_VERSION_LENGTH = 256
"""Longer is not a version any package manager would install."""


class VersionError(ValueError):
    """A version text the package manager would not accept."""


@lru_cache(maxsize=262144)
def debian_version(text: str) -> DebianVersion:
    """TEXT as a dpkg version; VersionError if dpkg would refuse it."""
    if not text or len(text) > MAX_VERSION_LENGTH or text != text.strip():
        raise VersionError(f"not a Debian version: {text[:80]!r}")
    try:
        return DebianVersion(text)
    except ValueError as error:
        raise VersionError(f"not a Debian version: {text[:80]!r}") from error


@lru_cache(maxsize=65536)
def rpm_version(text: str) -> RpmVersion:
    """TEXT as an RPM ``[epoch:]version[-release]``; VersionError if it is not one."""
    if not text or len(text) > MAX_VERSION_LENGTH or any(ch.isspace() for ch in text):
        raise VersionError(f"not an RPM version: {text[:80]!r}")
    try:
        return RpmVersion(text)
    except (InvalidVersion, ValueError) as error:
        raise VersionError(f"not an RPM version: {text[:80]!r}") from error


_RPM_DISTROS = frozenset({"rhel", "centos", "rocky", "almalinux", "fedora", "amzn", "ol", "sles"})


def uses_rpm(release: str) -> bool:
    """Whether RELEASE (``release_key`` form, e.g. ``rhel:9``) versions its packages as RPM does."""
    return release.partition(":")[0] in _RPM_DISTROS


def check(release: str, text: str) -> str:
    """TEXT, if RELEASE's package manager accepts it as a version; VersionError if not."""
    if uses_rpm(release):
        rpm_version(text)
    else:
        debian_version(text)
    return text


def is_older(release: str, version: str, than: str) -> bool:
    """Whether VERSION sorts before THAN for RELEASE's package manager (``debian:12``...)."""
    if uses_rpm(release):
        return rpm_version(version) < rpm_version(than)
    return debian_version(version) < debian_version(than)
