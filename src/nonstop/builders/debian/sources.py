"""Debian source packages at exact versions, fetched through apt (or the pool) into a cache dir.

``<cache>/<package>_<version>/`` holds what ``apt-get source --download-only``
fetched (the ``.dsc`` and its tarballs, checked by apt against the archive's
signed index) or, for a version apt's index does not list or whose files it
does not deliver, what ``pool`` took from the archive's pool once the
``.dsc``'s signature verified against Debian's keyrings; and ``source/``,
their ``dpkg-source -x --skip-patches`` unpacking: the upstream tree with
``debian/`` and its ``debian/patches`` *not applied*, so that the plan can
compare series and the later steps can apply the patches themselves, level
by level. The stamp ``source.json`` is written last (with the pool origin,
if any): a later call reuses only a complete entry and redoes a partial one.
An flock on the cache dir serialises concurrent fetches. Offline, only the
cache is read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Dsc
from debian.debian_support import Version

from nonstop.builders import cache
from nonstop.builders.debian.apt import enable_deb_src, served_versions
from nonstop.builders.debian.pool import PoolOrigin, fetch_from_pool
from nonstop.builders.errors import BuilderError

STAMP = "source.json"
# Debian policy 5.6.1 (source names) and 5.6.12 (versions): nothing else reaches argv or a path.
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SourcePackage:
    """Source PACKAGE at VERSION, unpacked (patches not applied) under ``ROOT/source``."""

    package: str
    version: str
    format: str
    root: Path
    pool: PoolOrigin | None = None
    """Set when the version came from the archive's pool, not through apt's index."""

    @property
    def tree(self) -> Path:
        return self.root / "source"

    @property
    def upstream_tarballs(self) -> frozenset[tuple[str, str]]:
        """(name, SHA-256) of the tarballs that are not the Debian part: same set, same upstream."""
        return frozenset(
            (entry["name"], entry["sha256"])
            for entry in Dsc(self._dsc_text()).get("Checksums-Sha256", [])
            if ".debian." not in entry["name"]
        )

    def _dsc_text(self) -> str:
        return next(self.root.glob("*.dsc")).read_text()


def check_name(package: str, version: str) -> None:
    """A BuilderError unless PACKAGE and VERSION are a well-formed source name and version."""
    if not _PACKAGE.fullmatch(package):
        raise BuilderError(f"{package!r} is not a Debian source package name")
    if not _VERSION.fullmatch(version):
        raise BuilderError(f"{version!r} is not a Debian version")


def fetch_source(
    package: str,
    version: str,
    cache_dir: Path | None = None,
    *,
    offline: bool = False,
    progress: Progress | None = None,
    trust_expired: frozenset[str] = frozenset(),
) -> SourcePackage:
    """Source PACKAGE at exactly VERSION, from the cache, else through apt, else from the
    archive's pool (module docstring). TRUST_EXPIRED: fingerprints of keys whose signature
    on a pool .dsc is accepted although the keyring says they had expired (``signatures``).

    Offline, a version not cached is a BuilderError naming the cached ones.
    Online, a version neither apt nor the pool delivers is a BuilderError
    naming the versions apt's index lists.
    """
    check_name(package, version)
    say = progress or (lambda _line: None)
    cache_dir = (cache_dir or cache.cache_dir("debian")).resolve()
    directory = cache_dir / f"{package}_{version}"
    with cache.locked(cache_dir):
        cached = _read_stamp(directory)
        if cached is not None:
            _check_trust(cached, trust_expired)
            return cached
        if offline:
            have = ", ".join(str(v) for v in cached_versions(package, cache_dir)) or "none"
            raise BuilderError(
                f"{package} {version} is not in the cache {cache_dir} (--offline; cached "
                f"versions: {have}); run once without --offline to fetch it"
            )
        if enable_deb_src():
            say("added deb-src entries to apt's sources and updated its indexes")
        served = served_versions(package)
        shutil.rmtree(directory, ignore_errors=True)
        for stale in cache_dir.glob(".fetch-*"):  # left by a fetch that was killed
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".fetch-"))
        work.chmod(0o755)
        try:
            origin = _download(package, version, served, work, say, trust_expired)
            _unpack(package, version, work, origin, say)
            work.rename(directory)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        cached = _read_stamp(directory)
        assert cached is not None
        return cached


def _check_trust(source: SourcePackage, trust_expired: frozenset[str]) -> None:
    """A cached pool version whose signer's key had expired is used only when this run, too,
    accepts that key: the operator's decision is for each run, not for the cache."""
    pool = source.pool
    if (
        pool is not None
        and pool.trusted_expired_key
        and pool.signer.fingerprint not in trust_expired
    ):
        raise BuilderError(
            f"{source.package} {source.version} (cached) came from the pool signed by "
            f"{pool.signer.describe()}, after that expiry: refused "
            f"(--trust-expired-key {pool.signer.fingerprint} accepts this key)"
        )


def _download(
    package: str,
    version: str,
    served: list[Version],
    work: Path,
    say: Progress,
    trust_expired: frozenset[str],
) -> PoolOrigin | None:
    """The .dsc and its files into WORK, through apt if its index lists VERSION, else (or if
    apt cannot deliver them) from the pool; the pool origin, or None for apt's."""
    failure = ""
    if Version(version) in served:
        say(f"{package} {version}: downloading the source package (apt-get source)")
        argv = ["apt-get", "source", "--download-only", "--only-source", "-q"]
        if os.geteuid() == 0:  # apt's _apt user cannot write into root's cache
            argv += ["-o", "APT::Sandbox::User=root"]
        try:
            cache.run_tool([*argv, f"{package}={version}"], cwd=work)
            return None
        except BuilderError as exc:
            failure = str(exc)
        for leftover in work.iterdir():
            leftover.unlink()
        say(f"{package} {version}: apt could not deliver it ({failure}); trying the pool")
    else:
        say(f"{package} {version}: not in apt's index; looking in the archive's pool")
    origin = fetch_from_pool(package, version, work, say, trust_expired=trust_expired)
    if origin is not None:
        return origin
    if failure:
        raise BuilderError(f"{failure}; the archive's pool has no {package} {version} either")
    if not served:
        raise BuilderError(f"the archive serves no source package {package} (apt-get update?)")
    raise BuilderError(
        f"the archive does not serve {package} {version} (not in apt's index nor in its "
        f"pool); its index lists {', '.join(str(v) for v in served)}"
    )


def _unpack(
    package: str, version: str, work: Path, origin: PoolOrigin | None, say: Progress
) -> None:
    dsc = _the_dsc(work, package)
    say(f"{package} {version}: unpacking {dsc.name} (dpkg-source -x, patches not applied)")
    cache.run_tool(["dpkg-source", "-x", "--skip-patches", dsc.name, "source"], cwd=work)
    stamp = {
        "package": package,
        "version": version,
        "format": str(Dsc(dsc.read_text()).get("Format", "1.0")),
        "pool": origin.to_json() if origin is not None else None,
    }
    (work / STAMP).write_text(json.dumps(stamp))


def _the_dsc(work: Path, package: str) -> Path:
    found = sorted(work.glob(f"{package}_*.dsc"))
    if len(found) != 1:
        raise BuilderError(f"the download left {len(found)} {package} .dsc files, not one")
    return found[0]


def _read_stamp(directory: Path) -> SourcePackage | None:
    try:
        stamp = json.loads((directory / STAMP).read_text())
        pool = PoolOrigin.from_json(stamp["pool"]) if stamp.get("pool") else None
        return SourcePackage(stamp["package"], stamp["version"], stamp["format"], directory, pool)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_versions(package: str, cache_dir: Path | None = None) -> list[Version]:
    """The versions of PACKAGE complete in the cache, oldest first."""
    cache_dir = cache_dir or cache.cache_dir("debian")
    found = []
    for directory in cache_dir.glob(f"{package}_*"):
        cached = _read_stamp(directory)
        if cached is not None and cached.package == package:
            found.append(Version(cached.version))
    return sorted(found)
