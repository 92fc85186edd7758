"""`nonstop build debian SOURCE --from V --to V --plan`: the per-CVE plan of a Debian update.

``--plan`` is required for now: building the levels is the next step, and
the option keeps the command's shape for it (docs/debian-updates.md).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from nonstop.builders.cache import cache_dir
from nonstop.builders.debian.changes import Plan, make_plan
from nonstop.builders.debian.patches import file_kind
from nonstop.builders.debian.sources import fetch_source
from nonstop.builders.errors import BuilderError
from nonstop.console import emit_json, fail, stderr, stdout

TOOL = "nonstop build debian"


def _cve(text: str) -> str:
    if not re.fullmatch(r"CVE-\d{4}-\d{4,}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a CVE id (CVE-YYYY-NNNN)")
    return text


def register_build(builders: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = builders.add_parser(
        "debian", help="plan per-CVE live patches from two versions of a Debian source package"
    )
    parser.add_argument("source", metavar="SOURCE", help="source package name (e.g. expat)")
    parser.add_argument("--from", dest="old", required=True, metavar="VERSION")
    parser.add_argument("--to", dest="new", required=True, metavar="VERSION")
    parser.add_argument(
        "--plan",
        action="store_true",
        required=True,
        help="print the per-CVE plan (required: building levels is not implemented yet)",
    )
    parser.add_argument(
        "--cve", action="append", type=_cve, default=[], metavar="CVE", help="only this CVE"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--offline", action="store_true", help="use only the cache, never apt")
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help=f"source package cache (default {cache_dir('debian')}, or $NONSTOP_DEBIAN_CACHE)",
    )
    parser.set_defaults(handler=cmd_build_debian)


def cmd_build_debian(args: argparse.Namespace) -> int:
    """Fetch both versions (or read them from the cache) and print the plan; 1 on a BuilderError."""

    def progress(line: str) -> None:
        stderr.print(f"{TOOL}: {line}", markup=False)

    try:
        old = fetch_source(
            args.source, args.old, args.cache, offline=args.offline, progress=progress
        )
        new = fetch_source(
            args.source, args.new, args.cache, offline=args.offline, progress=progress
        )
        plan = make_plan(old, new)
        if args.cve:
            plan = plan.only(list(dict.fromkeys(args.cve)))
    except BuilderError as exc:
        fail(TOOL, str(exc))
    if args.json:
        emit_json(plan.to_json())
    else:
        stdout.print(render_text(plan), markup=False)
    return 0


def render_text(plan: Plan) -> str:
    """The plan as text: a summary, one block per CVE, patches naming no CVE, update-wide notes."""
    lines = [
        f"{plan.package} {plan.old.version} -> {plan.new.version}: "
        f"{len(plan.entries)} changelog entries, {len(plan.cves)} CVEs"
    ]
    for cve in plan.cves:
        lines.append("")
        lines.append(f"{cve.cve}{'' if cve.library_code else '  (not library code)'}")
        for entry in cve.entries:
            lines.append(f"  version  {entry.version} (urgency {entry.urgency or 'unknown'})")
        if cve.closes:
            lines.append(f"  closes   {', '.join(f'#{bug}' for bug in cve.closes)}")
        for patch in cve.patches:
            lines.append(f"  patch    {patch.name} ({patch.status})")
        for path in cve.files:
            lines.append(f"  file     {path} ({file_kind(path)})")
        lines += [f"  note     {note}" for note in cve.notes]
    if plan.unassigned:
        lines += ["", "Patches naming no CVE"]
        lines += [
            f"  {patch.name} ({patch.status}): {', '.join(patch.files) or 'no files'}"
            for patch in plan.unassigned
        ]
    if plan.refreshed:
        lines += ["", f"Refreshed only (same changes): {', '.join(plan.refreshed)}"]
    if plan.notes:
        lines += ["", "Notes"] + [f"  {note}" for note in plan.notes]
    return "\n".join(lines)
