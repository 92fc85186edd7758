"""`nonstopctl --lib-*`: userspace library patches in running processes (kcarectl's flags).

- ``--lib-update --bundle FILE [--pid PID ...] [--strict] [--allow-downgrade]``:
  verify the bundle against the trusted keys, then patch every process mapping
  its target build-id (or only the PIDs given); ``--allow-downgrade`` makes it a
  rollback (a lower level, or another build of the applied level); without
  ``--bundle``: every library the patch server has a level for (``online``);
- ``--lib-info``: processes with live patches, read from the processes;
- ``--lib-patch-info``: the fixes and functions those patches apply;
- ``--lib-unload [--pid PID ...]``: take the patches out again (without
  ``--pid``, the levels are also forgotten and held out of automatic updates,
  so nothing re-applies them: ``lib_levels``).

With ``--json`` each prints one JSON document; per process: ``pid``,
``result`` (patched, already, busy, refused, gone; reverted for unload),
``reason``, ``level_before``, ``level_after``, ``functions``, ``pause_us``.
Exit status: 0 when no process ended busy or refused, ``EXIT_PARTIAL`` otherwise.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from nonstop.agent.actions import (
    EXIT_PARTIAL,
    EXIT_USAGE,
    Action,
    AgentContext,
    AgentError,
    require_root,
)
from nonstop.console import emit_json, stdout

if TYPE_CHECKING:  # the engine is imported by the commands that use it, not by every nonstopctl
    from nonstop.userspace import ProcessResult


def add_options(parser: argparse.ArgumentParser) -> None:
    """Userspace options: ``--strict`` (engine safety mode) and ``--allow-downgrade`` (rollback)."""
    parser.add_argument(
        "--strict",
        action="store_true",
        help="userspace: switch only when no thread is in or returning into a replaced function",
    )
    parser.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="--lib-update --bundle: roll back to this bundle's level (lower, or the same level "
        "built differently)",
    )


def _exit_code(results: list[ProcessResult]) -> int:
    return EXIT_PARTIAL if any(r.failed for r in results) else 0


def print_results(results: list[ProcessResult]) -> None:
    """One text line per process result ("no matching process" when there are none)."""
    if not results:
        stdout.print("no matching process", markup=False)
    for r in results:
        levels = f"level {r.level_before or '-'} -> {r.level_after or '-'}"
        reason = f": {r.reason}" if r.reason else ""
        pause = f", paused {r.pause_us} us" if r.pause_us else ""
        stdout.print(f"{r.pid} {r.executable}: {r.result} ({levels}{pause}){reason}", markup=False)


def lib_update(ctx: AgentContext) -> int:
    """``--lib-update``: without ``--bundle``, the online update of userspace only.

    With ``--bundle FILE``: the file is verified and cached, then applied to every
    process mapping its target (or to ``--pid`` processes) and recorded as wanted
    (``lib_levels.apply_bundle``: with ``--pid``, a level not lower than the recorded
    one is recorded too, so the daemon brings it to the other processes).
    EXIT_PARTIAL if any process is busy or refused it.
    """
    from nonstop.agent import lib_levels
    from nonstop.agent.level_files import refresh_library_files
    from nonstop.bundle.container import read_bundle_bytes
    from nonstop.userspace.errors import RefusedError

    require_root("--lib-update")
    if not ctx.config.userspace_enabled:
        raise AgentError(
            "userspace patching is disabled (configuration or nonstopctl --disable-lib)"
        )
    if ctx.args.bundle is None:
        from nonstop.agent.online_commands import online_update

        if ctx.args.allow_downgrade:
            raise AgentError(
                "--allow-downgrade needs --bundle FILE (the level to go back to)", EXIT_USAGE
            )
        return online_update(ctx, "userspace", 0.0)
    bundle = ctx.bundle_cache.store(read_bundle_bytes(ctx.args.bundle), ctx.trusted_keys())
    engine = lib_levels.engine_for(ctx)
    try:
        spec, results = lib_levels.apply_bundle(
            engine, ctx.state, bundle, ctx.config.blocklist, ctx.args.pid or None
        )
    except RefusedError as exc:
        raise AgentError(str(exc)) from None
    refresh_library_files(ctx.config.state_dir, engine, ctx.config.blocklist)
    if ctx.json:
        emit_json(
            {
                "action": "lib-update",
                "bundle": {
                    "sha256": bundle.sha256,
                    "level": spec.level,
                    "build_id": spec.build_id,
                    "soname": spec.soname,
                },
                "processes": [r.to_dict() for r in results],
            }
        )
    else:
        stdout.print(f"{spec.soname} level {spec.level} (build-id {spec.build_id})", markup=False)
        print_results(results)
    return _exit_code(results)


def _live(ctx: AgentContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per live patch, and one per foreign patch memory (a mapping named like
    nonstop's whose header nonstop did not write: shown, never trusted)."""
    from nonstop.agent import lib_levels

    engine = lib_levels.engine_for(ctx)
    rows, foreign = [], []
    for pid in ctx.args.pid or engine.processes_with_patches():
        patches, others = engine.inspect(pid)
        for patch in patches:
            doc = patch.region.document
            rows.append(
                {
                    "pid": pid,
                    "executable": patch.executable,
                    "soname": doc["soname"],
                    "build_id": patch.region.build_id,
                    "level": patch.region.level,
                    "state": patch.region.state.name.lower(),
                    "functions": patch.region.functions,
                    "info": doc["info"],
                }
            )
        foreign += [
            {
                "pid": pid,
                "start": f"{each.start:#x}",
                "end": f"{each.end:#x}",
                "reason": each.reason,
            }
            for each in others
        ]
    return rows, foreign


def lib_info(ctx: AgentContext) -> int:
    """``--lib-info``: the live patches found in process memory (not the record); exit 0."""
    require_root("--lib-info")
    rows, foreign = _live(ctx)
    if ctx.json:
        emit_json(
            {
                "processes": [{k: v for k, v in r.items() if k != "info"} for r in rows],
                "foreign": foreign,
            }
        )
        return 0
    if not rows:
        stdout.print("no live userspace patches", markup=False)
    for r in rows:
        stdout.print(
            f"{r['pid']} {r['executable']}: {r['soname']} level {r['level']} "
            f"({len(r['functions'])} functions)",
            markup=False,
        )
    for f in foreign:
        stdout.print(
            f"{f['pid']}: foreign patch memory at {f['start']}-{f['end']} ({f['reason']}): "
            "not nonstop's, ignored",
            markup=False,
        )
    return 0


def lib_patch_info(ctx: AgentContext) -> int:
    """``--lib-patch-info``: live patches grouped by (build-id, level), from patch memory; text
    in kcarectl's ``key: value`` form (``patch_notes``)."""
    from nonstop.agent.patch_notes import known_scores, kpatch_lines

    require_root("--lib-patch-info")
    patches: dict[tuple[str, int], dict[str, Any]] = {}
    for row in _live(ctx)[0]:
        key = (row["build_id"], row["level"])
        info = row["info"]
        entry = patches.setdefault(
            key,
            {
                "build_id": row["build_id"],
                "soname": row["soname"],
                "level": row["level"],
                "effective_version": info.get("effective_version"),
                "bundle_sha256": info.get("bundle_sha256"),
                "cves": info.get("cves", []),
                "fixes": info.get("fixes", []),
                "functions": row["functions"],
                "pids": [],
            },
        )
        entry["pids"].append(row["pid"])
    documents = list(patches.values())
    if ctx.json:
        emit_json({"patches": documents})
        return 0
    if not documents:
        stdout.print("no live userspace patches", markup=False)
    scores, url = known_scores(ctx.state)
    for number, p in enumerate(documents):
        lines = [""] if number else []
        lines += kpatch_lines(
            p["soname"], p["level"], p["effective_version"], p["fixes"], scores, url
        )
        lines.append(f"kpatch-build-id: {p['build_id']}")
        lines.append(f"kpatch-processes: {len(p['pids'])}")
        lines += [f"kpatch-function: {name}" for name in p["functions"]]
        for line in lines:
            stdout.print(line, markup=False)
    return 0


def lib_unload(ctx: AgentContext) -> int:
    """``--lib-unload``: revert the patches in every process (or the ``--pid`` ones).

    Without ``--pid`` the recorded levels are dropped and held first, so nothing
    re-applies them; with ``--pid`` the record stays (the daemon's rescan patches
    those processes again). EXIT_PARTIAL if any process could not be reverted.
    """
    from nonstop.agent import lib_levels
    from nonstop.agent.level_files import refresh_library_files

    require_root("--lib-unload")
    engine = lib_levels.engine_for(ctx)
    if not ctx.args.pid:
        # Unloaded everywhere: neither the daemon nor --auto-update may bring it back. Recorded
        # before the revert, so a running daemon never sees a reverted process still wanted.
        lib_levels.forget(ctx.state, {w.build_id for w in lib_levels.wanted_levels(ctx.state)})
    results = [engine.revert(pid) for pid in ctx.args.pid or engine.processes_with_patches()]
    refresh_library_files(ctx.config.state_dir, engine, ctx.config.blocklist)
    if ctx.json:
        emit_json({"action": "lib-unload", "processes": [r.to_dict() for r in results]})
    else:
        print_results(results)
    return _exit_code(results)


ACTIONS = [
    Action(
        "--lib-update",
        "apply published userspace patches (or the one in --bundle FILE) to running processes",
        lib_update,
        options=frozenset({"--bundle", "--pid", "--strict", "--allow-downgrade"}),
    ),
    Action(
        "--lib-info",
        "show processes with live userspace patches",
        lib_info,
        options=frozenset({"--pid"}),
    ),
    Action(
        "--lib-patch-info",
        "show the fixes and functions of live userspace patches",
        lib_patch_info,
        options=frozenset({"--pid"}),
    ),
    Action(
        "--lib-unload",
        "remove userspace patches from running processes",
        lib_unload,
        options=frozenset({"--pid", "--strict"}),
    ),
]
