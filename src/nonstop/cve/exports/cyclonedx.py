"""CycloneDX 1.6 VEX documents for one host or many.

Each host is an ``operating-system`` component holding its packages (with
their Package URLs) and the live patches applied to them (``file``
components whose SHA-256 hash is the bundle digest). Each finding is one
vulnerability whose ``affects`` names the host's package at its installed
version, and whose ``analysis`` gives the state: a live-patched CVE is
``resolved``, with the live patch named in ``analysis.detail`` and in
``nonstop:`` properties; the package version stays the installed one, marked
``affected`` when that version has the flaw.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from nonstop import __version__
from nonstop.cve.exports.subjects import Subject, inert, live_patch_text, stable_id, timestamp
from nonstop.cve.model import LivePatchLevel, Status

SPEC_VERSION = "1.6"

ANALYSIS = {
    Status.NOT_AFFECTED: "not_affected",
    Status.FIXED_BY_PACKAGE: "resolved",
    Status.FIXED_BY_LIVE_PATCH: "resolved",
    Status.PARTLY_FIXED: "exploitable",
    Status.RESTART_NEEDED: "exploitable",
    Status.OPEN_FIX_AVAILABLE: "exploitable",
    Status.OPEN_NO_FIX: "exploitable",
    Status.UNDETERMINED: "in_triage",
}
"""``analysis.state`` of each status."""

NOT_AFFECTED_JUSTIFICATION = "code_not_present"

Json = dict[str, Any]


def _response(s: Subject) -> list[str]:
    """``analysis.response``: what was or can be done."""
    f = s.finding
    if f.status is Status.OPEN_NO_FIX:
        return ["will_not_fix" if f.nodsa else "can_not_fix"]
    if f.status in (Status.NOT_AFFECTED, Status.UNDETERMINED):
        return []
    return ["update"]


def _version_status(s: Subject) -> str:
    if s.finding.status is Status.UNDETERMINED:
        return "unknown"
    return "affected" if s.installed_flawed else "unaffected"


def _live_patch_component(host_ref: str, level: LivePatchLevel) -> Json:
    return {
        "type": "file",
        "bom-ref": f"livepatch-{stable_id(host_ref, level.target_key, level.bundle_sha256)[:20]}",
        "name": f"nonstop live patch for {inert(level.target_key)}",
        "version": str(level.level),
        "description": live_patch_text(level),
        "hashes": [{"alg": "SHA-256", "content": level.bundle_sha256}],
    }


def _properties(s: Subject) -> list[Json]:
    props = [("nonstop:status", str(s.finding.status)), ("nonstop:host-id", inert(s.host.host_id))]
    facts = s.live_patch_facts() or {}
    props += [(f"nonstop:live-patch:{key}", str(value)) for key, value in sorted(facts.items())]
    if s.restart_text():
        props.append(("nonstop:restart", s.restart_text()))
    return [{"name": name, "value": value} for name, value in props]


def _vulnerability(s: Subject, refs: list[str]) -> Json:
    f = s.finding
    analysis: Json = {"state": ANALYSIS[f.status], "detail": s.summary() + "."}
    if f.status is Status.NOT_AFFECTED:
        analysis["justification"] = NOT_AFFECTED_JUSTIFICATION
    if _response(s):
        analysis["response"] = _response(s)
    version = inert(f.installed_version) if f.installed_version else None
    versions = [{"version": version, "status": _version_status(s)}] if version else []
    vulnerability: Json = {
        "bom-ref": f"vuln-{s.key[:24]}",
        "id": inert(f.cve, 40),
        "source": {"name": "NVD", "url": f"https://nvd.nist.gov/vuln/detail/{inert(f.cve, 40)}"},
        "description": s.summary(),
        "analysis": analysis,
        "affects": [{"ref": ref} | ({"versions": versions} if versions else {}) for ref in refs],
        "properties": _properties(s),
    }
    if f.cvss is not None:
        vulnerability["ratings"] = [{"score": f.cvss, "method": "other"}]
    if s.action():
        vulnerability["recommendation"] = s.action()
    return vulnerability


def document(subjects: Sequence[Subject], *, generated_at: datetime, namespace: str) -> Json:
    """The CycloneDX VEX document stating SUBJECTS (one host's or a fleet's findings)."""
    hosts: dict[str, Json] = {}
    members: dict[str, dict[str, Json]] = {}
    vulnerabilities = []
    for s in sorted(subjects, key=lambda s: (s.host.host_id, s.finding.cve, s.finding.source)):
        host_ref = f"host-{stable_id(s.host.host_id)[:20]}"
        hosts.setdefault(
            host_ref,
            {
                "type": "operating-system",
                "bom-ref": host_ref,
                "name": s.hostname,
                "version": inert(s.host.release),
                "description": f"host {inert(s.host.host_id)}",
            },
        )
        parts = members.setdefault(host_ref, {})
        live = s.finding.status is Status.FIXED_BY_LIVE_PATCH
        refs = []
        for p in s.patched_packages if live else s.packages:
            ref = f"pkg-{stable_id(s.host.host_id, p.purl)[:20]}"
            parts[ref] = {"type": "library", "bom-ref": ref, "name": inert(p.name), "purl": p.purl}
            if p.version is not None:
                parts[ref]["version"] = inert(p.version)
            refs.append(ref)
        if s.finding.live_patch:
            patch = _live_patch_component(host_ref, s.finding.live_patch)
            parts[patch["bom-ref"]] = patch
        vulnerabilities.append(_vulnerability(s, refs))
    components = [
        hosts[ref] | {"components": [members[ref][key] for key in sorted(members[ref])]}
        for ref in sorted(hosts)
    ]
    digest = stable_id(namespace, components, vulnerabilities)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": uuid.UUID(hex=digest[:32], version=5).urn,
        "version": 1,
        "metadata": {
            "timestamp": timestamp(generated_at),
            "tools": {
                "components": [{"type": "application", "name": "nonstop", "version": __version__}]
            },
        },
        "components": components,
        "vulnerabilities": vulnerabilities,
    }
