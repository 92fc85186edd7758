"""Findings exported for scanners: OSV, CSAF 2.0 VEX, CycloneDX VEX, OpenVEX and OVAL.

``export(fmt, host, findings, generated_at=...)`` gives the bytes of one
host's document; ``export_fleet`` gives one document for many hosts in the
formats that carry several products (CSAF, CycloneDX, OpenVEX). OSV records
and OVAL definitions are per host: OVAL is evaluated on the host itself, and
an OSV record's ``ecosystem_specific`` tells one host's live patch.

The output is deterministic: the same findings give the same bytes but for
the timestamps made from ``generated_at``. Ids derive from host ids, CVEs and
content, never from counters or the clock. The status of each finding maps to
each format's words as docs/vulnerabilities.md tells.

Modules, by what they own:

- ``subjects``: what one finding concerns on its host (packages and their
  Package URLs, live patch target), the sentences every format carries, and
  untrusted text made inert.
- ``osv``, ``csaf``, ``cyclonedx``, ``openvex``: the JSON documents.
- ``oval``: OVAL 5.11 definitions checking the package version and the live
  patch state on the host, for ``oscap oval eval``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from nonstop.cve.exports import csaf, cyclonedx, openvex, osv, oval
from nonstop.cve.exports.subjects import ExportError, Subject, subjects
from nonstop.cve.model import LEVEL_STATE_DIR, Finding, HostState

FORMATS = ("osv", "csaf", "cyclonedx", "openvex", "oval")
FLEET_FORMATS = ("csaf", "cyclonedx", "openvex")
DEFAULT_NAMESPACE = "urn:nonstop"
"""Names the publisher (CSAF) and prefixes document ids (OpenVEX) unless the caller gives
its own (the server's public URL)."""

__all__ = ["DEFAULT_NAMESPACE", "FLEET_FORMATS", "FORMATS", "ExportError", "export", "export_fleet"]


def export(
    fmt: str,
    host: HostState,
    findings: Iterable[Finding],
    *,
    generated_at: datetime,
    namespace: str = DEFAULT_NAMESPACE,
    level_dir: str = LEVEL_STATE_DIR,
    livepatch_dir: str = oval.LIVEPATCH_SYSFS,
) -> bytes:
    """HOST's FINDINGS as a FMT document (UTF-8). LEVEL_DIR and LIVEPATCH_DIR are where the
    OVAL tests read the agent's level files and the kernel's livepatch states."""
    found = subjects(host, findings)
    if fmt == "osv":
        return _json(osv.records(found, generated_at=generated_at))
    if fmt == "oval":
        return oval.definitions(
            found, generated_at=generated_at, level_dir=level_dir, livepatch_dir=livepatch_dir
        )
    return _fleet_document(fmt, found, generated_at=generated_at, namespace=namespace)


def export_fleet(
    fmt: str,
    hosts: Iterable[tuple[HostState, Iterable[Finding]]],
    *,
    generated_at: datetime,
    namespace: str = DEFAULT_NAMESPACE,
) -> bytes:
    """One FMT document (csaf, cyclonedx or openvex) stating the findings of every host."""
    if fmt not in FLEET_FORMATS:
        raise ExportError(
            f"{fmt!r} is exported per host; fleet formats: {', '.join(FLEET_FORMATS)}"
        )
    ordered = sorted(hosts, key=lambda pair: pair[0].host_id)
    found = [s for host, findings in ordered for s in subjects(host, findings)]
    return _fleet_document(fmt, found, generated_at=generated_at, namespace=namespace)


def _fleet_document(
    fmt: str, found: Sequence[Subject], *, generated_at: datetime, namespace: str
) -> bytes:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if not found:
        raise ExportError(f"no findings to state: a {fmt} document needs at least one")
    build = {"csaf": csaf.document, "cyclonedx": cyclonedx.document, "openvex": openvex.document}
    return _json(build[fmt](found, generated_at=generated_at, namespace=namespace))


def _json(document: Any) -> bytes:
    """DOCUMENT as stable UTF-8 JSON: sorted keys, two-space indent, final newline."""
    text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode()
