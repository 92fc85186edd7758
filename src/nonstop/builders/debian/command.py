"""`nonstop build debian SOURCE --from V --to V`: per-CVE live patches from a Debian update.

With ``--plan`` it stops after the plan (which patches fix which CVE); else
it fetches the ``--from`` libraries, builds the original once and the levels
incrementally, and reports per CVE (docs/debian-updates.md). Exit status: 0
when no CVE was refused, 3 when some were, 1 on an error.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from nonstop.builders.cache import cache_dir
from nonstop.builders.debian.binaries import fetch_libraries
from nonstop.builders.debian.changes import Plan, make_plan
from nonstop.builders.debian.levels import LevelBuilder
from nonstop.builders.debian.original import original_build
from nonstop.builders.debian.patches import file_kind
from nonstop.builders.debian.report import UpdateReport, render_report
from nonstop.builders.debian.sources import fetch_source
from nonstop.builders.errors import BuilderError
from nonstop.bundle import BundleError, load_signing_key
from nonstop.console import emit_json, fail, stderr, stdout
from nonstop.cve.ids import is_cve_id

TOOL = "nonstop build debian"


def _cve(text: str) -> str:
    if not is_cve_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a CVE id (CVE-YYYY-NNNN)")
    return text


def _fingerprint(text: str) -> str:
    if not re.fullmatch(r"[0-9A-Fa-f]{40}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an OpenPGP fingerprint (40 hex digits)")
    return text.upper()


def register_build(builders: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = builders.add_parser(
        "debian", help="build per-CVE live patches from a Debian security update of a library"
    )
    parser.add_argument("source", metavar="SOURCE", help="source package name (e.g. expat)")
    parser.add_argument("--from", dest="old", required=True, metavar="VERSION")
    parser.add_argument("--to", dest="new", required=True, metavar="VERSION")
    parser.add_argument("--plan", action="store_true", help="print the per-CVE plan, build nothing")
    parser.add_argument("--key", type=Path, metavar="KEY", help="signing key (to build)")
    parser.add_argument("-o", "--output", type=Path, metavar="OUTDIR", help="bundles go here")
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the JSON report")
    parser.add_argument(
        "--cve", action="append", type=_cve, default=[], metavar="CVE", help="only this CVE"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--offline", action="store_true", help="use only the cache, never apt")
    parser.add_argument(
        "--trust-expired-key",
        action="append",
        type=_fingerprint,
        default=[],
        metavar="FINGERPRINT",
        help="accept this Debian keyring key's signature on a pool .dsc made after the key's "
        "expiry as the keyring records it",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help=f"source package cache (default {cache_dir('debian')}, or $NONSTOP_DEBIAN_CACHE)",
    )
    parser.set_defaults(handler=cmd_build_debian)


def cmd_build_debian(args: argparse.Namespace) -> int:
    """The plan, or the levels and their report; 1 on a BuilderError, 3 if a CVE was refused."""
    if not args.plan and (args.key is None or args.output is None):
        fail(TOOL, "building needs --key KEY and -o OUTDIR (or --plan to only plan)", code=64)

    def progress(line: str) -> None:
        stderr.print(f"{TOOL}: {line}", markup=False)

    started = time.monotonic()
    trusted = frozenset(args.trust_expired_key)
    try:
        old, new = (
            fetch_source(
                args.source, version, args.cache, offline=args.offline, progress=progress,
                trust_expired=trusted,
            )
            for version in (args.old, args.new)
        )  # fmt: skip
        plan = make_plan(old, new)
        if args.cve:
            plan = plan.only(list(dict.fromkeys(args.cve)))
        if args.plan:
            if args.json:
                emit_json(plan.to_json())
            else:
                stdout.print(render_text(plan), markup=False)
            return 0
        key = load_signing_key(args.key)
        libraries = fetch_libraries(old, offline=args.offline, progress=progress)
        original = original_build(old, libraries, offline=args.offline, progress=progress)
        with tempfile.TemporaryDirectory(prefix="nonstop-debian-") as work:
            outcomes = LevelBuilder(plan, original, key, args.output, Path(work), progress).run()
    except (BuilderError, BundleError) as exc:
        fail(TOOL, str(exc))
    report = UpdateReport(plan, original, outcomes, round(time.monotonic() - started, 1))
    document = report.to_json()
    if args.report is not None:
        args.report.write_text(json.dumps(document, indent=2) + "\n")
    if args.json:
        emit_json(document)
    else:
        stdout.print(render_report(report), markup=False)
    return 3 if any(outcome.status == "refused" for outcome in outcomes) else 0


def render_text(plan: Plan) -> str:
    """The plan as text: a summary, one block per CVE, patches naming no CVE, update-wide notes."""
    lines = [
        f"{plan.package} {plan.old.version} -> {plan.new.version}: "
        f"{len(plan.entries)} changelog entries, {len(plan.cves)} CVEs"
    ]
    for cve in plan.cves:
        lines.append("")
        not_library = cve.patches and not cve.library_code
        lines.append(f"{cve.cve}{'  (not library code)' if not_library else ''}")
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
