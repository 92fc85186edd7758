"""The applied fixes in kcarectl's ``key: value`` form, the one ``kcarectl --patch-info`` prints.

One block per CVE a fix names (a fix naming none gets one block too), blocks
separated by a blank line. The CVSS score and the tracker link come from the
host's last findings (``nonstopctl --vulnerabilities``), when the server's
feeds give them; a score nobody gave is left out rather than guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nonstop.agent.online import FINDINGS_NAME
from nonstop.agent.state import StateStore

_CVE_URL = "https://security-tracker.debian.org/tracker/{cve}"
_GENERIC_CVE_URL = "https://www.cve.org/CVERecord?id={cve}"


def known_scores(store: StateStore) -> tuple[dict[str, float], str]:
    """CVE -> CVSS score from the last findings, and the URL pattern of the host's release."""
    document = store.read(FINDINGS_NAME)
    scores = {
        finding["cve"]: float(finding["cvss"])
        for finding in document.get("findings", [])
        if isinstance(finding.get("cvss"), int | float)
    }
    release = str(document.get("release", ""))
    return scores, _CVE_URL if release.startswith("debian:") else _GENERIC_CVE_URL


def kpatch_lines(
    target: str,
    level: int,
    effective_version: str,
    fixes: Iterable[dict[str, Any]],
    scores: dict[str, float],
    cve_url: str,
) -> list[str]:
    """The blocks of one applied level of TARGET (a kernel release, or a library's soname)."""
    lines: list[str] = []
    for fix in fixes:
        for cve in fix["cves"] or [None]:
            if lines:
                lines.append("")
            name = cve or fix["title"]
            lines += [
                f"kpatch-name: {target}/level-{level}/{name}",
                f"kpatch-description: {fix['title']}",
                f"kpatch-target: {target}",
                f"kpatch-level: {level}",
                f"kpatch-effective-version: {effective_version}",
                f"kpatch-cve: {cve or 'N/A'}",
            ]
            if cve in scores:
                lines.append(f"kpatch-cvss: {scores[cve]:.1f}")
            if cve:
                lines.append(f"kpatch-cve-url: {cve_url.format(cve=cve)}")
    return lines
