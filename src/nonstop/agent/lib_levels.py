"""The userspace levels this host wants, and applying one to every process that maps its target.

``userspace.json`` in the state dir records, per target build-id, the level
wanted (the newest applied, or the one the operator rolled back to) and its
bundle's SHA-256 (the bundle itself stays in the verified cache). The
processes remain the truth about what is live; the record is what the daemon
and ``--auto-update`` re-apply to processes that do not have it yet (started
after the patch, or after a reboot).

It also records the levels the operator took out (``held``: ``--lib-unload``,
or a rollback with ``--allow-downgrade``): per target build-id, level N and
every lower level stay out of automatic updates until the operator applies
something to that target again or the server offers a level above N.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nonstop.agent.actions import AgentContext
from nonstop.agent.bundle_cache import BundleCache
from nonstop.agent.config import Blocklist
from nonstop.agent.new_processes import RelroCache, still_starting
from nonstop.agent.state import StateStore
from nonstop.bundle import Bundle, TrustedKeys
from nonstop.bundle.errors import BundleError
from nonstop.userspace import Engine, EngineOptions, PatchSpec, ProcessResult
from nonstop.userspace.bundles import spec_from_bundle
from nonstop.userspace.errors import RefusedError
from nonstop.userspace.procfs import executable_of

STATE_NAME = "userspace"


@dataclass(frozen=True)
class WantedLevel:
    """One recorded level of ``userspace.json``; its bundle is in the cache under BUNDLE_SHA256."""

    build_id: str
    level: int
    bundle_sha256: str


def wanted_levels(store: StateStore) -> list[WantedLevel]:
    """The recorded levels, by build-id; StateError when ``userspace.json`` is unreadable."""
    targets = store.read(STATE_NAME).get("targets", {})
    return [
        WantedLevel(build_id, int(entry["level"]), str(entry["bundle_sha256"]))
        for build_id, entry in sorted(targets.items())
    ]


def held_levels(store: StateStore) -> dict[str, int]:
    """Per target build-id, the level the operator took out (it and lower ones stay out)."""
    held = store.read(STATE_NAME).get("held", {})
    return {build_id: int(entry["level"]) for build_id, entry in held.items()}


def remember(
    store: StateStore,
    spec: PatchSpec,
    sha256: str,
    results: list[ProcessResult],
    *,
    rollback: bool = False,
    everywhere: bool = True,
) -> None:
    """Record SPEC as wanted unless every process refused it, was busy or was gone.

    With no process mapping the target right now, it is still wanted: the
    daemon patches the next process that maps it. A ROLLBACK (the operator's
    explicit downgrade) lowers the wish and holds the level it replaced out of
    automatic updates; any other recorded level ends the target's hold (it is
    the operator's own apply, or a level above the held one). Applied to some
    processes only (not EVERYWHERE), only a higher level changes the record.
    """
    if results and all(r.failed or r.result == "gone" for r in results):
        return
    with store.locked(STATE_NAME):
        document = store.read(STATE_NAME)
        targets: dict[str, Any] = document.setdefault("targets", {})
        held: dict[str, Any] = document.setdefault("held", {})
        known = targets.get(spec.build_id)
        lower = known is not None and known["level"] > spec.level
        if lower and not rollback:
            return  # an older level for some processes (--pid) does not lower the wish
        if not everywhere and known is not None and known["level"] == spec.level:
            return  # nor does another build of the wanted level for some processes
        rebuilt = (
            known is not None and known["level"] == spec.level and known["bundle_sha256"] != sha256
        )
        if known is not None and rollback and (lower or rebuilt):
            _hold(held, spec.build_id, int(known["level"]))
        else:
            held.pop(spec.build_id, None)
        targets[spec.build_id] = {
            "level": spec.level,
            "bundle_sha256": sha256,
            "applied": int(time.time()),
        }
        store.write(STATE_NAME, document)


def _hold(held: dict[str, Any], build_id: str, level: int) -> None:
    level = max(level, int(held.get(build_id, {}).get("level", 0)))
    held[build_id] = {"level": level, "at": int(time.time())}


def forget(store: StateStore, build_ids: set[str]) -> None:
    """Unloaded everywhere by the operator: nothing re-applies these targets' levels, and
    the server's offer of the same level (or lower) is held back until the operator says."""
    with store.locked(STATE_NAME):
        document = store.read(STATE_NAME)
        targets = document.get("targets", {})
        held: dict[str, Any] = document.setdefault("held", {})
        for build_id in build_ids:
            known = targets.pop(build_id, None)
            if known is not None:
                _hold(held, build_id, int(known["level"]))
        store.write(STATE_NAME, document)


def load_spec(cache: BundleCache, trusted: TrustedKeys, wanted: WantedLevel) -> PatchSpec:
    """The wanted level's patch, from the cache and verified again (BundleError if not)."""
    return spec_from_bundle(cache.load(wanted.bundle_sha256, trusted))


_RELRO = RelroCache()


def apply_to_processes(
    engine: Engine, spec: PatchSpec, blocklist: Blocklist, pids: list[int] | None = None
) -> list[ProcessResult]:
    """Apply SPEC to PIDS, or to every process mapping its target.

    Blocklisted processes are refused; a process that ld.so is still
    relocating is left alone (``busy``: the daemon or the next run takes it)."""
    results = []
    for pid in pids if pids is not None else engine.processes_mapping(spec.build_id):
        executable = executable_of(pid)
        try:
            result = _apply_one(engine, spec, blocklist, pid, executable)
        except Exception as exc:  # one process's failure stays its own (the engine's are)
            result = ProcessResult(pid, "refused", f"cannot inspect process ({type(exc).__name__})")
        result.executable, result.build_id = executable, spec.build_id
        results.append(result)
    return results


def _apply_one(
    engine: Engine, spec: PatchSpec, blocklist: Blocklist, pid: int, executable: str
) -> ProcessResult:
    if executable and blocklist.blocks(executable):
        return ProcessResult(pid, "refused", "blocklisted")
    if still_starting(pid, spec.build_id, engine.build_ids, _RELRO):
        return ProcessResult(pid, "busy", "still starting: ld.so has not finished relocating")
    return engine.apply(pid, spec)


def apply_bundle(
    engine: Engine,
    store: StateStore,
    bundle: Bundle,
    blocklist: Blocklist,
    pids: list[int] | None = None,
) -> tuple[PatchSpec, list[ProcessResult]]:
    """Apply a verified userspace BUNDLE everywhere (or to PIDS) and record it as wanted.

    Everywhere with the engine allowed to go down, it is a rollback (see ``remember``).
    For some PIDS only, a lower level or another build of the wanted one changes those
    processes now and not the recorded wish; a higher level is recorded as for all
    (``remember``), so the daemon then brings it to every process mapping the target."""
    spec = spec_from_bundle(bundle)
    results = apply_to_processes(engine, spec, blocklist, pids)
    everywhere = pids is None
    rollback = engine.options.allow_downgrade and everywhere
    remember(store, spec, bundle.sha256, results, rollback=rollback, everywhere=everywhere)
    return spec, results


def engine_for(context: AgentContext) -> Engine:
    """The engine as this run's configuration and flags set it up (``--strict``, and
    ``--allow-downgrade``, which only ``--lib-update --bundle`` accepts)."""
    return Engine(
        EngineOptions(
            strict=bool(getattr(context.args, "strict", False)),
            cache_dir=context.config.cache_dir / "elf",
            allow_downgrade=bool(getattr(context.args, "allow_downgrade", False)),
        )
    )


def restore_userspace(context: AgentContext, engine: Engine) -> tuple[list[dict[str, Any]], bool]:
    """Boot step: every recorded userspace level, from the verified cache, to every process
    mapping its target that lacks it (no network). Per target, what happened; and whether
    anything failed (a cached bundle unusable, or a process busy or refused)."""
    if not context.config.userspace_enabled:
        return [], False
    trusted = context.trusted_keys()
    restored = []
    failed = False
    for wanted in wanted_levels(context.state):
        entry: dict[str, Any] = {"build_id": wanted.build_id, "level": wanted.level}
        try:
            spec = load_spec(context.bundle_cache, trusted, wanted)
        except (BundleError, RefusedError) as exc:
            entry["error"] = f"cached bundle {wanted.bundle_sha256[:16]}: {exc}"
            restored.append(entry)
            failed = True
            continue
        results = apply_to_processes(engine, spec, context.config.blocklist)
        entry["soname"] = spec.soname
        entry["processes"] = [r.to_dict() for r in results]
        failed |= any(r.failed for r in results)
        restored.append(entry)
    return restored, failed
