"""OpenVEX 0.2.0 documents for one host or many.

One statement per host and finding: the product is the host (an IRI under
the export namespace), its subcomponents the packages the finding is about,
by Package URL at their installed version. A live-patched CVE is ``fixed``
with the live patch (target, level, bundle digest) in ``status_notes``;
exposed ones are ``affected`` with the restart or upgrade to do as the
``action_statement``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from nonstop import __version__
from nonstop.cve.exports.subjects import Subject, inert, stable_id, timestamp
from nonstop.cve.model import Status

CONTEXT = "https://openvex.dev/ns/v0.2.0"

STATUS = {
    Status.NOT_AFFECTED: "not_affected",
    Status.FIXED_BY_PACKAGE: "fixed",
    Status.FIXED_BY_LIVE_PATCH: "fixed",
    Status.PARTLY_FIXED: "affected",
    Status.RESTART_NEEDED: "affected",
    Status.OPEN_FIX_AVAILABLE: "affected",
    Status.OPEN_NO_FIX: "affected",
    Status.UNDETERMINED: "under_investigation",
}
"""The OpenVEX status of each status."""

NOT_AFFECTED_JUSTIFICATION = "vulnerable_code_not_present"

Json = dict[str, Any]


def iri(namespace: str, *parts: str) -> str:
    """An IRI under NAMESPACE (a URN or a URL) naming PARTS, each percent-encoded."""
    encoded = [quote(part, safe="") for part in parts]
    separator = ":" if namespace.startswith("urn:") else "/"
    return separator.join([namespace.rstrip("/:"), *encoded])


def _statement(s: Subject, namespace: str) -> Json:
    f = s.finding
    live = f.status is Status.FIXED_BY_LIVE_PATCH
    packages = s.patched_packages if live else s.packages
    statement: Json = {
        "vulnerability": {"name": inert(f.cve, 40)},
        "products": [
            {
                "@id": iri(namespace, "host", s.host.host_id),
                "subcomponents": [
                    {"@id": p.purl, "identifiers": {"purl": p.purl}} for p in packages
                ],
            }
        ],
        "status": STATUS[f.status],
        "status_notes": s.summary() + ".",
    }
    if f.status is Status.NOT_AFFECTED:
        statement["justification"] = NOT_AFFECTED_JUSTIFICATION
    if statement["status"] == "affected":
        statement["action_statement"] = s.action() or "Upgrade when a fixed version is published."
    return statement


def document(subjects: Sequence[Subject], *, generated_at: datetime, namespace: str) -> Json:
    """The OpenVEX document stating SUBJECTS (one host's or a fleet's findings)."""
    ordered = sorted(subjects, key=lambda s: (s.host.host_id, s.finding.cve, s.finding.source))
    statements = [_statement(s, namespace) for s in ordered]
    return {
        "@context": CONTEXT,
        "@id": iri(namespace, "vex", stable_id(statements)[:32]),
        "author": "nonstop",
        "timestamp": timestamp(generated_at),
        "version": 1,
        "tooling": f"nonstop {__version__}",
        "statements": statements,
    }
