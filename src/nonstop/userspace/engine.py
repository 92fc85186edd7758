"""The engine's entry points: find target processes, apply a level, revert, report.

Each operation on a process runs under that process's lock, first finishes
whatever a killed patcher left half-done (from the in-process headers), and
ends with one result: ``patched``, ``already``, ``busy``, ``refused``,
``gone`` (and ``reverted`` for unload). Nothing that can be refused is
refused after the process was touched: linking and site validation happen
before any thread is stopped. (Later refusals come only from the target
swapping or rewriting the new patch memory, or from no free address within
reach; they leave nothing of the patch behind.)
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nonstop.bundle import LevelAction, decide_level
from nonstop.bundle.errors import LevelPolicyError
from nonstop.bundle.symbols import SymbolMap
from nonstop.userspace.discovery import processes_mapping, processes_with_patches
from nonstop.userspace.dispatch import fill_dispatch, layout_dispatch
from nonstop.userspace.elfmodel import ModelCache
from nonstop.userspace.errors import (
    BusyError,
    EngineError,
    ProcessGoneError,
    RefusedError,
)
from nonstop.userspace.header import MAX_JSON, well_formed
from nonstop.userspace.image import BuildIdCache, LoadedModule, ProcessImage
from nonstop.userspace.inject import SYS_MUNMAP
from nonstop.userspace.linker import PreparedLink, prepare_link
from nonstop.userspace.lock import DEFAULT_LOCK_DIR, process_lock
from nonstop.userspace.memory import ProcessMemory
from nonstop.userspace.placement import candidates
from nonstop.userspace.procfs import executable_of, is_alive, read_maps
from nonstop.userspace.region import (
    COMMIT_OFFSET,
    JSON_OFFSET,
    Foreign,
    Region,
    create_region,
    encode_header,
    find_regions,
    header_size_for,
    memfd_name,
    running,
    scan_regions,
)
from nonstop.userspace.scope import Scope
from nonstop.userspace.sites import ALIGNMENT, JMP_SIZE, Site, plan_site
from nonstop.userspace.trampoline import Displaced
from nonstop.userspace.transaction import Hook, ProcessPatcher, SwitchPolicy

SITES_CACHE = "sites-v2"
"""Validated entry sites per file content, with their trampoline plans."""


@dataclass(frozen=True)
class PatchSpec:
    """What one verified userspace bundle asks for."""

    build_id: str
    soname: str
    level: int
    object_bytes: bytes
    functions: tuple[tuple[str, str], ...]
    """(target function, replacement symbol in the object)."""
    symbol_map: SymbolMap | None = None
    expected_code: dict[str, str] = field(default_factory=dict)
    """Target function -> SHA-256 of its original bytes, when the bundle records it."""
    info: dict[str, Any] = field(default_factory=dict)
    """Shown by --lib-patch-info: bundle sha256, fixes, CVEs, effective version."""


@dataclass
class ProcessResult:
    """What one operation did to one process; RESULT is patched, already, busy, refused, gone
    or reverted, REASON one line saying why."""

    pid: int
    result: str
    reason: str = ""
    level_before: int | None = None
    level_after: int | None = None
    functions: list[str] = field(default_factory=list)
    pause_us: int = 0
    """First thread stopped to last thread resumed, in the window that switched the entries."""
    retire_pause_us: int = 0
    """A later window that unmapped old code still in use at the switch (0: none needed)."""
    executable: str = ""
    build_id: str = ""

    @property
    def failed(self) -> bool:
        """The process should have the level and does not (busy or refused; not gone)."""
        return self.result in ("busy", "refused")

    def to_dict(self) -> dict[str, Any]:
        """Every field, for JSON output."""
        return dict(vars(self))


@dataclass
class EngineOptions:
    """How an :class:`Engine` works (see :class:`transaction.SwitchPolicy` for the switch)."""

    strict: bool = False
    attempts: int = 12
    lock_dir: Path = DEFAULT_LOCK_DIR
    cache_dir: Path | None = None
    """ELF models and validated sites of files only root can change are cached here, per file
    content (cold runs skip parsing libc)."""
    realtime: bool = True
    hook: Hook | None = None
    """Called with (event, pid) at fixed points; tests use it to inject real faults."""
    allow_downgrade: bool = False
    keep_old_levels: bool = False
    """Leave replaced levels mapped (stacking). Only for bench/ to measure what replace saves."""


def _other_build(current: Region, spec: PatchSpec) -> str | None:
    """The SHA-256 of the bundle CURRENT came from, when it is not SPEC's (None: the same,
    or unknown). Read from the process's memory: it only chooses between two refusals."""
    info = current.document.get("info")
    theirs = info.get("bundle_sha256") if isinstance(info, dict) else None
    ours = spec.info.get("bundle_sha256")
    if isinstance(theirs, str) and isinstance(ours, str) and theirs != ours:
        return theirs[:64]
    return None


@dataclass(frozen=True)
class LivePatch:
    """One patch memory found in a process, for --lib-info and --lib-patch-info."""

    pid: int
    executable: str
    region: Region


class Engine:
    """The engine of one agent run: its caches (ELF models, build-ids of mapped files, site
    plans) are shared by the processes it handles, one after another (no locking). Use it on
    the main thread: the stop windows' wait timeouts are SIGALRM timers, and on another thread
    a wait has no timeout (:func:`ptrace.deadline`)."""

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self.models = ModelCache(self.options.cache_dir)
        self.build_ids = BuildIdCache()
        self._sites: dict[str, dict[str, Any]] = {}

    # -- discovery ------------------------------------------------------------

    def processes_mapping(self, build_id: str) -> list[int]:
        """Processes (not this one) mapping a file with BUILD_ID; nothing is stopped."""
        return processes_mapping(build_id, self.build_ids)

    def processes_with_patches(self) -> list[int]:
        """Processes whose maps show memory named like nonstop's (a process can forge the name:
        :meth:`inspect` tells)."""
        return processes_with_patches()

    def live_patches(self, pid: int) -> list[LivePatch]:
        """The running level per target in PID (:meth:`inspect` without the foreign memory)."""
        return self.inspect(pid)[0]

    def inspect(self, pid: int) -> tuple[list[LivePatch], list[Foreign]]:
        """The running level per target in PID, and the patch memory it shows that is not
        nonstop's (a forged or damaged header: reported, never trusted)."""
        try:
            with ProcessMemory(pid) as memory:
                regions, foreign = scan_regions(pid, memory)
        except (OSError, ProcessGoneError):
            return [], []
        exe = executable_of(pid)
        targets: dict[str, list[Region]] = {}
        for region in regions:
            targets.setdefault(region.build_id, []).append(region)
        runs = [running(group) for group in targets.values()]
        return [LivePatch(pid, exe, region) for region in runs if region is not None], foreign

    # -- operations ------------------------------------------------------------

    def apply(self, pid: int, spec: PatchSpec) -> ProcessResult:
        """Make SPEC's level run in PID, replacing any level of the same target in one switch.

        Never raises for the process's sake: every failure is the result (refused before
        anything changed; busy with the new memory removed; gone); already when the level
        runs from this very bundle. Under the process lock,
        it first finishes what a killed patcher left; the level policy refuses a lower level,
        or the same level from another bundle, unless downgrades are allowed."""
        result = ProcessResult(
            pid,
            "refused",
            executable=executable_of(pid),
            build_id=spec.build_id,
            functions=[target for target, _ in spec.functions],
        )
        with self._guard(result), self._session(pid, spec.build_id) as (patcher, target, image):
            current = running(patcher.regions(spec.build_id))
            result.level_before = result.level_after = current.level if current else None
            try:
                action = decide_level(
                    result.level_before,
                    spec.level,
                    allow_downgrade=self.options.allow_downgrade,
                )
            except LevelPolicyError as exc:
                raise RefusedError(f"{exc} (--allow-downgrade)") from None
            if action is LevelAction.ALREADY and current is not None:
                other = _other_build(current, spec)
                if other is None:
                    result.result, result.reason = "already", f"level {spec.level} is applied"
                    return result
                if not self.options.allow_downgrade:
                    raise RefusedError(
                        f"level {spec.level} is applied from another bundle (SHA-256 {other[:16]}"
                        f", this one is {spec.info['bundle_sha256'][:16]}): a different build "
                        "of the same level; replacing it is a rollback (--allow-downgrade)"
                    )
            region = self._prepare(patcher, image, target, spec, current)
            try:
                regions = [*patcher.regions(spec.build_id)]
                wanted = next(r for r in regions if r.start == region.start)
                patcher.reconcile(regions, wanted)
            except BusyError:
                with contextlib.suppress(EngineError):
                    patcher.discard(region)
                raise
            result.result, result.level_after = "patched", spec.level
            result.pause_us = patcher.outcome.pause_us
            result.retire_pause_us = patcher.outcome.retire_pause_us
            result.reason = "; ".join(patcher.outcome.notes)
        return result

    def revert(self, pid: int, build_id: str | None = None) -> ProcessResult:
        """Remove every live patch (of BUILD_ID only, when given) from PID."""
        result = ProcessResult(pid, "refused", executable=executable_of(pid))
        with self._guard(result):
            with ProcessMemory(pid) as memory:
                build_ids = sorted({r.build_id for r in find_regions(pid, memory)})
            if build_id is not None:
                build_ids = [b for b in build_ids if b == build_id]
            if not build_ids:
                result.result, result.reason = "already", "no live patch"
                return result
            for each in build_ids:
                result.build_id = each
                with self._session(pid, each) as (patcher, _, _):
                    regions = patcher.regions(each)
                    current = running(regions)
                    if current is not None:
                        result.level_before = current.level
                        result.functions = current.functions
                    patcher.reconcile(regions, None)
                    result.pause_us = patcher.outcome.pause_us
                    result.retire_pause_us = patcher.outcome.retire_pause_us
                    result.reason = "; ".join(patcher.outcome.notes)
            result.result = "reverted"
        return result

    # -- internals ------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, result: ProcessResult) -> Iterator[None]:
        """Turn engine errors into the process's result."""
        try:
            yield
        except (EngineError, OSError) as exc:
            if isinstance(exc, ProcessGoneError) or not is_alive(result.pid):
                # An exiting process loses its mappings first: whatever failed, it is gone.
                result.result, result.reason = "gone", f"process {result.pid} exited"
            elif isinstance(exc, BusyError):
                result.result, result.reason = "busy", str(exc)
            elif isinstance(exc, RefusedError):
                result.result, result.reason = "refused", str(exc)
            else:
                result.result, result.reason = "refused", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # one process's failure stays its own
            # Whatever a process maps (ELF files, headers) is hostile: a parser may fail in any
            # way on it. Only the type is reported: the message may quote the process's data.
            result.result = "gone" if not is_alive(result.pid) else "refused"
            result.reason = f"cannot inspect process {result.pid} ({type(exc).__name__})"

    @contextlib.contextmanager
    def _session(
        self, pid: int, build_id: str
    ) -> Iterator[tuple[ProcessPatcher, LoadedModule, ProcessImage]]:
        if not is_alive(pid):
            raise ProcessGoneError(f"process {pid} is gone")
        try:
            lock = process_lock(pid, self.options.lock_dir)
            lock.__enter__()
        except FileNotFoundError:
            raise ProcessGoneError(f"process {pid} is gone") from None
        try:
            with ProcessMemory(pid) as memory:
                image = ProcessImage(pid, self.models, self.build_ids)
                modules = image.with_build_id(build_id)
                if not modules:
                    raise RefusedError(
                        f"process {pid} does not map a file with build-id {build_id}"
                    )
                if len(modules) > 1:
                    raise RefusedError(f"process {pid} maps build-id {build_id} more than once")
                policy = SwitchPolicy(
                    strict=self.options.strict,
                    attempts=self.options.attempts,
                    realtime=self.options.realtime,
                    hook=self.options.hook,
                    keep_old_levels=self.options.keep_old_levels,
                )
                others = sorted(
                    (m for m in image.modules if m is not modules[0]), key=lambda m: m.path
                )
                patcher = ProcessPatcher(pid, memory, [modules[0], *others], policy)
                patcher.recover(build_id)
                yield patcher, modules[0], image
        finally:
            lock.__exit__(None, None, None)

    def _prepare(
        self,
        patcher: ProcessPatcher,
        image: ProcessImage,
        target: LoadedModule,
        spec: PatchSpec,
        current: Region | None,
    ) -> Region:
        """Link, validate sites and create the new level's memory (PREPARED); refuse early.

        Its sites are the functions it replaces plus, as pass-throughs, those the current
        level replaced and it does not: every function changes at its one commit."""
        if spec.symbol_map is not None and spec.symbol_map.build_id != spec.build_id:
            raise RefusedError("the bundle's symbol map is for another build-id")
        scope = Scope(image, patcher.memory, target, spec.symbol_map)
        planned: list[tuple[Site, int, str | None, int | None]] = []
        """(site, function size, replacement (None: pass-through), stub it jumps to now)."""
        for function, replacement in spec.functions:
            site, size = self._site(scope, target, function)
            now = self._running_at(patcher, site, current)
            _check_code(patcher, site, size, now, spec.expected_code.get(function))
            planned.append((site, size, replacement, now))
        replaced = {function for function, _ in spec.functions}
        for record in current.sites if current is not None else []:
            assert current is not None
            live = patcher.memory.read(record.patch_address, JMP_SIZE)
            if record.function not in replaced and live == current.jump_for(record):
                site, size = self._site(scope, target, record.function)
                planned.append((site, size, None, current.start + record.stub))
        sites = [site for site, _, _, _ in planned]
        document: dict[str, Any] = {
            "level": spec.level,
            "build_id": spec.build_id,
            "soname": spec.soname,
            "target_path": target.path,
            "info": spec.info,
            "sites": [
                {
                    "function": site.function,
                    "entry": site.entry,
                    "patch_address": site.patch_address,
                    "size": size,
                    "original": site.original.hex(),
                    "replacement": replacement,
                    **dict.fromkeys(("new", "stub", "trampoline", "slot"), 0),
                }
                for site, size, replacement, _ in planned
            ],
            "code": [0, 0],
        }
        # Room for the offsets filled in after layout (at most 16 digits each).
        header_size = header_size_for(document) + 16 * (4 * len(sites) + 2)
        entries, dispatch_end = layout_dispatch(sites, header_size)
        link = prepare_link(spec.object_bytes, dispatch_end, scope.resolve)
        for item, entry in zip(document["sites"], entries, strict=True):
            replacement = item["replacement"]
            item["new"] = _defined(link, replacement) if replacement else entry.trampoline
            item.update(stub=entry.stub, trampoline=entry.trampoline, slot=entry.slot)
        document["code"] = [header_size, link.rx_size]
        header = encode_header(document)
        if len(header) > header_size:
            raise EngineError("header grew after layout")  # offsets never change its length much
        if len(header) - JSON_OFFSET > MAX_JSON or not well_formed(document, link.size):
            # The readers accept only bounded, strictly shaped headers (a process can forge one).
            raise RefusedError(
                f"this level ({len(sites)} functions) does not fit the patch memory header"
            )
        anchors = [site.patch_address for site in sites] + link.far_targets()
        anchors += [t for site in sites for t in site.displaced.targets(site.patch_address)]
        maps = read_maps(patcher.pid)
        name = memfd_name(spec.build_id, spec.level)
        with patcher.injecting() as injector:
            for address in candidates(maps, link.size, anchors, target.base):
                rx, rw = link.relocate(address)
                rx[: len(header)] = header
                fill_dispatch(
                    rx,
                    address,
                    address + COMMIT_OFFSET,
                    sites,
                    entries,
                    new=[address + item["new"] for item in document["sites"]],
                    fallback=[
                        address + entry.trampoline if now is None else now
                        for entry, (_, _, _, now) in zip(entries, planned, strict=True)
                    ],
                )
                try:
                    create_region(injector, patcher.pid, address, name, bytes(rx), bytes(rw))
                except FileExistsError:
                    continue
                patcher._hook("prepared")
                for region in patcher.regions(spec.build_id):
                    if region.start == address:
                        return region
                # Its own file, but the target changed the header meanwhile (it can write
                # the memfd itself): nothing refers to it yet.
                injector.call(SYS_MUNMAP, address, len(rx) + len(rw), what="munmap")
                raise RefusedError("the patch memory header changed in the target after mapping")
        raise RefusedError("no free address range within rel32 reach of the library")

    def _site(self, scope: Scope, target: LoadedModule, function: str) -> tuple[Site, int]:
        """The validated entry site of FUNCTION; validation is cached per file content (on disk
        too, for files only root can change, so a cold run needs neither capstone nor the
        library's symbols for it)."""
        key = target.key
        sites = self._sites.setdefault(key.name, self.models.load_extra(key, SITES_CACHE))
        if function not in sites:
            found = scope.target_function(function)
            code = target.read_file(found.address - target.base, found.size + ALIGNMENT)
            site = plan_site(function, found.address, found.size, code, scope.function_starts())
            sites[function] = {
                "entry": site.entry - target.base,
                "patch": site.patch_address - target.base,
                "size": found.size,
                "original": site.original.hex(),
                "cet": site.cet,
                "displaced": site.displaced.to_json(),
            }
            self.models.store_extra(key, SITES_CACHE, sites)
        cached = sites[function]
        site = Site(
            function,
            target.base + cached["entry"],
            target.base + cached["patch"],
            bytes.fromhex(cached["original"]),
            bool(cached["cet"]),
            Displaced.from_json(cached["displaced"]),
        )
        return site, int(cached["size"])

    @staticmethod
    def _running_at(patcher: ProcessPatcher, site: Site, current: Region | None) -> int | None:
        """What runs at SITE now: None for the file's own bytes, else the stub of the applied
        level its entry jumps to. Anything else (a debugger, another tool) is refused."""
        live = patcher.memory.read(site.patch_address, len(site.original))
        if live == site.original:
            return None
        if current is not None:
            for record in current.sites:
                if record.patch_address == site.patch_address and live == current.jump_for(record):
                    return current.start + record.stub
        raise RefusedError(
            f"{site.function} at {site.patch_address:#x} was modified by something else "
            "(bytes differ from the library file)"
        )


def _check_code(
    patcher: ProcessPatcher, site: Site, size: int, now: int | None, expected: str | None
) -> None:
    """The function's code in the process (what would run, our entry jump read as the bytes
    it replaced) must be the code the bundle was built against, when the bundle says which."""
    if expected is None:
        return
    start = site.patch_address - site.entry
    # A jump may sit in the alignment padding after a very short function: read that far.
    code = bytearray(patcher.memory.read(site.entry, max(size, start + len(site.original))))
    if now is not None:
        code[start : start + len(site.original)] = site.original
    if hashlib.sha256(code[:size]).hexdigest() != expected:
        raise RefusedError(
            f"{site.function} at {site.entry:#x} in process {patcher.pid} is not the code the "
            "bundle was built for (its bytes differ)"
        )


def _defined(link: PreparedLink, name: str) -> int:
    if name in link.symbol_offsets:
        return link.symbol_offsets[name]
    local = [offset for key, offset in link.symbol_offsets.items() if key.split("#")[0] == name]
    if len(local) == 1:
        return local[0]
    raise RefusedError(f"replacement {name} is not defined in the patch object")
