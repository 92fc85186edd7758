"""What published bundles say: the CVEs each live patch level closes, and the fixes they carry.

Levels are cumulative: level N carries every fix of levels 1..N. Both
builders write it so (``nonstop build userspace`` puts the recipe's fixes
1..N in level N's manifest, ``nonstop build debian`` each earlier CVE's fix
before the new one), but a manifest is not trusted to: a level's ``cves`` are
the union of its own and those of every lower level of the same target.

A bundle built from a distribution update (``nonstop build debian``: the
manifest's ``update``) is also a feed (``bundles``): each of its CVEs is fixed
in ``update.source`` at ``update.to_version`` at the latest (the update may
have fixed it in an earlier upload; the manifest does not say which). The
release is the target package's distro when it names one (``debian 12``,
os-release's ID and VERSION_ID), else the ``+debNNuM``/``~debNNuM`` mark of
the update's versions; a bundle that tells neither is skipped and counted.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from nonstop.bundle import Manifest
from nonstop.cve import versions
from nonstop.cve.batch import PACKAGE_NAME, FeedBatch, batch, merged
from nonstop.cve.errors import FeedError, shown
from nonstop.cve.model import Advisory, FeedState, LivePatchLevel, release_key

FEED = "bundles"
LABEL = "bundles"

_STABLE_UPDATE = re.compile(r"[+~]deb(\d{1,3})u\d+")


def live_patch_levels(bundles: Iterable[tuple[Manifest, str]]) -> list[LivePatchLevel]:
    """One LivePatchLevel per (manifest, bundle SHA-256) of BUNDLES, its CVEs cumulative
    (module docstring), sorted by target and level."""
    by_target: defaultdict[str, list[tuple[Manifest, str]]] = defaultdict(list)
    for manifest, sha256 in bundles:
        by_target[manifest.target.key].append((manifest, sha256))
    levels: list[LivePatchLevel] = []
    for target, published in sorted(by_target.items()):
        own: defaultdict[int, set[str]] = defaultdict(set)
        for manifest, _ in published:
            own[manifest.level].update(manifest.cves)
        below: set[str] = set()
        cumulative = {}
        for level in sorted(own):
            below |= own[level]
            cumulative[level] = frozenset(below)
        levels.extend(
            LivePatchLevel(
                target_key=target,
                level=manifest.level,
                cves=cumulative[manifest.level],
                bundle_sha256=sha256,
                effective_version=manifest.effective_version,
                source=manifest.update.source if manifest.update else None,
            )
            for manifest, sha256 in sorted(published, key=lambda item: (item[0].level, item[1]))
        )
    return levels


def bundle_advisories(manifests: Iterable[Manifest]) -> FeedBatch:
    """The fixes the bundles built from a distribution update carry (module docstring)."""
    skipped: Counter[str] = Counter()
    advisories: list[Advisory] = []
    count = 0
    for manifest in manifests:
        count += 1
        update = manifest.update
        if update is None:
            skipped["bundles not built from a distribution update"] += 1
            continue
        where = f"{manifest.target.key} level {manifest.level}"
        if not PACKAGE_NAME.fullmatch(update.source):
            raise FeedError(
                f"update source {shown(update.source)} is not a Debian source package name",
                feed=LABEL,
                where=where,
            )
        release = _release(manifest)
        if release is None:
            skipped["bundles whose Debian release is not told"] += 1
            continue
        try:
            fixed = versions.check(release, update.to_version)
        except versions.VersionError as exc:
            raise FeedError(f"update to_version: {exc}", feed=LABEL, where=where) from None
        advisories.extend(
            Advisory(
                cve=cve,
                source=update.source,
                release=release,
                state=FeedState.FIXED,
                fixed_version=fixed,
                feed=FEED,
            )
            for cve in manifest.cves
        )
    return batch(FEED, merged(advisories), count, skipped)


def _release(manifest: Manifest) -> str | None:
    """The Debian release MANIFEST's update is for, if it tells (module docstring)."""
    package = manifest.target.package
    words = (package.distro or "").split() if package else []
    if len(words) == 2 and words[0] == "debian" and words[1].isdigit():
        return release_key("debian", words[1])
    assert manifest.update is not None
    for version in (manifest.update.to_version, manifest.update.from_version):
        match = _STABLE_UPDATE.search(version)
        if match:
            return release_key("debian", match.group(1))
    return None
