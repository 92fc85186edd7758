"""OSV records of one host: one per CVE and source package it is or was exposed to.

Each record describes the source package's flaw as the distribution fixed it
(``affected[].ranges`` up to the fixed version, ``versions`` listing the
installed one while it has the flaw) and tells the host's standing in
``affected[].ecosystem_specific``: the binaries installed, the status, the
live patch applied or available (target, build-id, level, bundle digest), the
processes still running flawed code. Not-affected findings have no affected
version, so they have no record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from nonstop.cve.exports.subjects import (
    ExportError,
    Subject,
    inert,
    level_facts,
    purl,
    shown_processes,
    timestamp,
)
from nonstop.cve.model import Status

SCHEMA_VERSION = "1.7.0"
ECOSYSTEMS = {"debian": "Debian", "ubuntu": "Ubuntu"}
"""OSV ecosystem names of the distributions whose findings can be exported as OSV."""

Json = dict[str, Any]


def _ecosystem(release: str) -> str:
    distro, _, number = release.partition(":")
    if distro not in ECOSYSTEMS:
        raise ExportError(f"no OSV ecosystem for release {inert(release, 40)!r}")
    return f"{ECOSYSTEMS[distro]}:{number}"


def _host_facts(s: Subject) -> Json:
    f = s.finding
    facts: Json = {
        "host_id": inert(s.host.host_id),
        "hostname": s.hostname,
        "status": str(f.status),
    }
    if f.live_patch:
        facts["live_patch"] = s.live_patch_facts()
    if f.available_bundle and f.status is Status.OPEN_FIX_AVAILABLE:
        facts["available_live_patch"] = level_facts(
            f.available_bundle, s.patched_build_id, s.kernel
        )
    if f.processes:
        named = shown_processes(f.processes)
        facts["processes"] = [{"pid": p.pid, "name": inert(p.name, 32)} for p in named]
        facts["process_count"] = len(f.processes)
    if s.kernel and s.host.kernel:
        facts["running_kernel"] = inert(s.host.kernel.release)
    if f.kernel_reboot:
        facts["kernel_reboot"] = True
    return facts


def record(s: Subject, *, modified: str) -> Json:
    """The OSV record of S."""
    f = s.finding
    events: list[dict[str, str]] = [{"introduced": "0"}]
    if f.fixed_version:
        events.append({"fixed": inert(f.fixed_version)})
    affected: Json = {
        "package": {
            "ecosystem": _ecosystem(s.host.release),
            "name": inert(f.source),
            "purl": purl(s.host.release, f.source, None, "source"),
        },
        "ranges": [{"type": "ECOSYSTEM", "events": events}],
        "ecosystem_specific": {
            "binaries": [
                {"binary_name": inert(p.name), "binary_version": inert(p.version or "")}
                for p in s.packages
                if p.arch != "source"
            ],
            "nonstop": _host_facts(s),
        },
    }
    if s.installed_flawed and f.installed_version:
        affected["versions"] = [inert(f.installed_version)]
    feed_facts = {
        "urgency": inert(f.urgency or ""),
        "cvss": f.cvss,
        "nodsa": inert(f.nodsa or ""),
        "feeds": [inert(feed) for feed in f.feeds],
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "id": f"x_NONSTOP-{inert(f.cve, 40)}-{s.key[:12]}",
        "modified": modified,
        "published": modified,
        "aliases": [inert(f.cve, 40)],
        "summary": s.headline(),
        "details": s.details(),
        "affected": [affected],
        "references": [
            {"type": "WEB", "url": f"https://nvd.nist.gov/vuln/detail/{inert(f.cve, 40)}"}
        ],
        "database_specific": {key: value for key, value in feed_facts.items() if value},
    }


def records(subjects: Sequence[Subject], *, generated_at: datetime) -> list[Json]:
    """The OSV records of SUBJECTS (one host's findings), not-affected ones left out."""
    modified = timestamp(generated_at)
    return [
        record(s, modified=modified)
        for s in subjects
        if s.finding.status is not Status.NOT_AFFECTED
    ]
