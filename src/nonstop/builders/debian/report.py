"""The report of ``nonstop build debian``: per CVE built, refused or not applicable, and why.

Text for people, JSON for tools (``--json``, ``--report FILE``), both made
from one document so they always agree. The summary line gives the
auto-build rate: CVEs built out of the CVEs whose patches change library
code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nonstop.builders.debian.changes import Plan
from nonstop.builders.debian.levels import CveOutcome
from nonstop.builders.debian.original import OriginalBuild


@dataclass
class UpdateReport:
    """Everything one run did, with its wall time in SECONDS."""

    plan: Plan
    original: OriginalBuild
    outcomes: list[CveOutcome]
    seconds: float

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def rate(self) -> float | None:
        """Built / (built + refused): the share of library fixes that became live patches."""
        built, refused = self.count("built"), self.count("refused")
        return round(built / (built + refused), 2) if built + refused else None

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.plan.package,
            "from": self.plan.old.version,
            "to": self.plan.new.version,
            "sources": {
                side: {
                    "version": source.version,
                    "origin": "pool" if source.pool is not None else "apt",
                    "pool": source.pool.to_json() if source.pool is not None else None,
                }
                for side, source in (("from", self.plan.old), ("to", self.plan.new))
            },
            "libraries": [
                {
                    "package": built.shipped.package,
                    "soname": built.shipped.soname,
                    "build_id": built.shipped.build_id,
                    "unstripped": built.unstripped,
                }
                for built in self.original.libraries
            ],
            "original_build": {
                "path": str(self.original.build_path),
                "seconds": self.original.seconds,
                "reused": self.original.reused,
            },
            "cves": [outcome.to_json() for outcome in self.outcomes],
            "summary": {
                "built": self.count("built"),
                "refused": self.count("refused"),
                "not_applicable": self.count("not-applicable"),
                "auto_build_rate": self.rate,
                "seconds": self.seconds,
            },
        }


def render_report(report: UpdateReport) -> str:
    """The report as text."""
    document = report.to_json()
    build = document["original_build"]
    lines = [
        f"{report.plan.package} {report.plan.old.version} -> {report.plan.new.version}",
        "original build: "
        + ("reused from the cache" if build["reused"] else f"{build['seconds']:.0f} s")
        + f" at {build['path']}",
    ]
    lines += [
        f"  {lib['soname']} ({lib['package']}): build-id {lib['build_id']} reproduced"
        for lib in document["libraries"]
    ]
    lines += [
        f"source {source.version}: {source.pool.describe()}"
        for source in (report.plan.old, report.plan.new)
        if source.pool is not None
    ]
    for outcome in report.outcomes:
        lines.append("")
        timing = (
            f" (build {outcome.build_seconds:.1f} s, analysis {outcome.analysis_seconds:.1f} s)"
            if outcome.build_seconds or outcome.analysis_seconds
            else ""
        )
        lines.append(f"{outcome.cve}: {outcome.status.upper()}{timing}")
        for level in outcome.levels:
            lines.append(
                f"  {level.soname} level {level.level} -> {level.bundle} "
                f"({level.bundle_bytes} bytes)"
            )
            lines.append(f"    replaces: {', '.join(level.functions)}")
        lines += [f"  patch  {name}" for name in outcome.patches]
        lines += [f"  why    {reason}" for reason in outcome.reasons]
    summary = document["summary"]
    rate = summary["auto_build_rate"]
    lines += [
        "",
        f"{summary['built']} built, {summary['refused']} refused, "
        f"{summary['not_applicable']} not applicable; auto-build rate "
        + (f"{rate:.0%}" if rate is not None else "n/a")
        + f"; {summary['seconds']:.0f} s",
    ]
    return "\n".join(lines)
