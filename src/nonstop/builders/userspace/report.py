"""The build report (``--report``): what each level patches, what was refused and why.

One document per build, as text for people or JSON for tools: the
reproduction verdict, then per level its fixes and CVEs, changed, added,
included-by-inlining and line-number-only functions, new data, links to
local symbols of the target, refused items with reasons, and sizes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nonstop.builders.userspace.builder import BuildResult, LevelResult


def level_document(level: LevelResult) -> dict[str, Any]:
    """One level of the JSON report.

    ``functions``, ``new_data`` and ``replaced_rodata`` are present only for
    an analysed level; ``replaces``, ``links`` and the sizes only for a built one.
    """
    analysis, patch = level.analysis, level.patch
    document: dict[str, Any] = {
        "level": level.level,
        "status": level.status,
        "fixes": [{"title": f.title, "cves": list(f.cves)} for f in level.fixes],
        "cves": sorted({cve for fix in level.fixes for cve in fix.cves}),
        "note": level.note or None,
        "bundle": str(level.bundle) if level.bundle else None,
        "bundle_bytes": level.bundle_bytes,
        "refused": [{"symbol": r.symbol, "reason": r.reason} for r in level.refusals],
        "analysis_seconds": level.seconds,
    }
    if analysis is not None:
        document["functions"] = {
            "changed": sorted(analysis.changed),
            "added": sorted(analysis.added),
            "inlined": [{"function": f, "inlines": via} for f, via in sorted(analysis.inlined)],
            "dependent": sorted(analysis.dependent),
            "line_number_only": sorted(set(analysis.line_only)),
        }
        document["new_data"] = sorted(analysis.new_data)
        document["replaced_rodata"] = sorted(analysis.replaced_rodata)
    if patch is not None:
        document["replaces"] = [
            {"target": f.target, "replacement": f.replacement} for f in patch.functions
        ]
        document["links"] = patch.links
        document["object_bytes"] = len(patch.data)
        document["text_bytes"] = patch.text_bytes
        document["data_bytes"] = patch.data_bytes
    return document


def report_document(result: BuildResult) -> dict[str, Any]:
    """The whole report; both renderings are made from it, so text and JSON always agree."""
    reproduction = result.reproduction
    return {
        "recipe": str(result.recipe.path),
        "name": result.recipe.name,
        "target": {
            "soname": reproduction.target.soname,
            "build_id": reproduction.target.build_id,
            "path": str(reproduction.target_path),
        },
        "reproduction": {
            "built_build_id": reproduction.built_build_id,
            "matches": reproduction.matches,
            "build_is_target": reproduction.build_is_target,
            "verdict": reproduction.describe(),
        },
        "target_copy": str(result.target_copy) if result.target_copy else None,
        "levels": [level_document(level) for level in result.levels],
        "stage_seconds": result.stages,
        "ok": result.ok,
    }


def render_json(result: BuildResult) -> str:
    """The report as JSON with sorted keys and a final newline: stable for diffing."""
    return json.dumps(report_document(result), indent=2, sort_keys=True) + "\n"


def _line(label: str, items: list[str]) -> str | None:
    return f"  {label}: {', '.join(items)}" if items else None


def render_text(result: BuildResult) -> str:
    """The report for people, made from the same document as render_json."""
    doc = report_document(result)
    lines = [
        f"nonstop build userspace: {doc['name']} ({doc['recipe']})",
        f"target: {doc['target']['soname']} {doc['target']['path']}",
        f"reproduction: {doc['reproduction']['verdict']}",
    ]
    if doc["target_copy"]:
        lines.append(f"target library to deploy: {doc['target_copy']}")
    for level in doc["levels"]:
        head = f"level {level['level']}: {level['status'].upper()}"
        if level["bundle"]:
            head += f" -> {level['bundle']} ({level['bundle_bytes']} bytes)"
        lines.append(head)
        for fix in level["fixes"]:
            cves = f" [{', '.join(fix['cves'])}]" if fix["cves"] else ""
            lines.append(f"  fix: {fix['title']}{cves}")
        lines.append(f"  CVEs: {', '.join(level['cves']) or '-'}")
        if level["note"]:
            lines.append(f"  note: {level['note']}")
        functions = level.get("functions", {})
        inlined = [
            f"{i['function']} (inlines {', '.join(i['inlines'])})"
            for i in functions.get("inlined", [])
        ]
        for text in (
            _line("changed", functions.get("changed", [])),
            _line("added", functions.get("added", [])),
            _line("included by inlining", inlined),
            _line("included with changed compiler-made code", functions.get("dependent", [])),
            _line("line numbers only (not patched)", functions.get("line_number_only", [])),
            _line("new data", level.get("new_data", [])),
            _line("replaced read-only data", level.get("replaced_rodata", [])),
            _line(
                "replaces",
                [f"{r['target']} -> {r['replacement']}" for r in level.get("replaces", [])],
            ),
            _line("linked to target locals", sorted(level.get("links", {}))),
        ):
            if text:
                lines.append(text)
        for refusal in level["refused"]:
            lines.append(f"  REFUSED {refusal['symbol']}: {refusal['reason']}")
        if "object_bytes" in level:
            lines.append(
                f"  patch object: {level['object_bytes']} bytes "
                f"(code {level['text_bytes']}, data {level['data_bytes']})"
            )
    stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in doc["stage_seconds"].items())
    lines.append(f"time: {stages}")
    return "\n".join(lines) + "\n"
