"""Apply, replace and revert for one process, and crash recovery, under the process lock.

Every change goes through one move, :meth:`ProcessPatcher.reconcile`: make
every known entry site of one target jump into one chosen region (or hold its
original bytes), then retire and unmap every other region. The states in the
in-process headers say which region is wanted:

- a PREPARED region that some site already jumps to is a switch that was cut
  short: roll it forward;
- a REVERTING region is an unload that was cut short: complete it;
- otherwise the ACTIVE region (or none) is wanted, and leftovers are removed.

Because each site write replaces one whole jump with another, a thread can
never see a torn instruction, and whatever instant a patcher dies at, each
function is at its old or its new code; the next run finishes the move.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nonstop.userspace.errors import BusyError, ProcessGoneError, RefusedError
from nonstop.userspace.image import LoadedModule
from nonstop.userspace.inject import GADGET, SYS_MUNMAP, Injector, pick_gadget_home
from nonstop.userspace.memory import ProcessMemory
from nonstop.userspace.procfs import Mapping, read_maps
from nonstop.userspace.region import (
    Region,
    SiteRecord,
    State,
    close_fds,
    find_regions,
    leaked_memfds,
    set_state,
    unmap_region,
    unreadable_regions,
)
from nonstop.userspace.safety import SafetyRules, ThreadView
from nonstop.userspace.sites import JMP_SIZE
from nonstop.userspace.stopwindow import StoppedProcess, critical_section

Hook = Callable[[str, int], None]


@dataclass
class SwitchPolicy:
    strict: bool = False
    attempts: int = 12
    first_backoff: float = 0.002
    max_backoff: float = 0.1
    realtime: bool = True
    hook: Hook | None = None
    keep_old_levels: bool = False


@dataclass
class Outcome:
    pause_us: int = 0
    retire_pause_us: int = 0
    """A second stop window, when old code was still in use at the switch."""
    attempts: int = 0
    notes: list[str] = field(default_factory=list)


class ProcessPatcher:
    """Changes to one process; the caller holds the process lock."""

    def __init__(
        self, pid: int, memory: ProcessMemory, modules: list[LoadedModule], policy: SwitchPolicy
    ) -> None:
        self.pid = pid
        self.memory = memory
        self.gadget = pick_gadget_home(modules)
        """Where injected syscalls run: (module, address) in padding after its code."""
        self.policy = policy
        self.outcome = Outcome()

    def _hook(self, event: str) -> None:
        if self.policy.hook is not None:
            self.policy.hook(event, self.pid)

    # -- reading the state --------------------------------------------------

    def regions(self, build_id: str | None = None) -> list[Region]:
        found = find_regions(self.pid, self.memory)
        return [r for r in found if build_id is None or r.build_id == build_id]

    def pointing_to(self, region: Region) -> int:
        """How many of REGION's sites currently jump into it."""
        return sum(
            self.memory.read(site.patch_address, JMP_SIZE) == region.jump_for(site)
            for site in region.sites
        )

    def wanted(self, regions: list[Region]) -> Region | None:
        """The region the recorded states say every site should jump to (None: original code)."""
        for region in regions:
            if region.state == State.PREPARED and self.pointing_to(region):
                return region
        if any(region.state == State.REVERTING for region in regions):
            return None
        active = [r for r in regions if r.state == State.ACTIVE]
        return max(active, key=self.pointing_to, default=None)

    def consistent(self, regions: list[Region], wanted: Region | None) -> bool:
        desired = self._desired_bytes(regions, wanted)
        return all(self.memory.read(addr, JMP_SIZE) == data for addr, (data, _) in desired.items())

    # -- the one move ----------------------------------------------------------

    def recover(self, build_id: str) -> None:
        """Finish whatever a previous patcher left half-done for BUILD_ID, and tidy up."""
        self._tidy_leftovers()
        regions = self.regions(build_id)
        wanted = self.wanted(regions)
        if not regions:
            return
        settled = wanted is not None and wanted.state == State.ACTIVE and len(regions) == 1
        if settled and self.consistent(regions, wanted):
            return
        self.reconcile(regions, wanted)

    def reconcile(self, regions: list[Region], wanted: Region | None) -> None:
        """Point every site of REGIONS at WANTED (None: original bytes); unmap the rest.

        BusyError when the switch found no safe moment within the retry bound;
        then nothing changed. Old code still in use stays mapped (RETIRED) until
        a later run finds nothing executing in or returning into it.
        """
        if not self.consistent(regions, wanted) or any(
            r is not wanted and r.state != State.RETIRED for r in regions
        ):
            self._switch(regions, wanted)
        leftovers = [r for r in regions if r is not wanted]
        if leftovers and not self.policy.keep_old_levels:
            self._retire(leftovers)

    def discard(self, region: Region) -> None:
        """Remove a PREPARED region no site jumps to (a switch that never happened)."""
        self._unmap([region])

    def _desired_bytes(
        self, regions: list[Region], wanted: Region | None
    ) -> dict[int, tuple[bytes, SiteRecord]]:
        desired: dict[int, tuple[bytes, SiteRecord]] = {}
        for region in regions:
            for site in region.sites:
                desired.setdefault(site.patch_address, (site.original, site))
        if wanted is not None:
            for site in wanted.sites:
                desired[site.patch_address] = (wanted.jump_for(site), site)
        return desired

    def _switch_rules(
        self, regions: list[Region], wanted: Region | None, changing: list[SiteRecord]
    ) -> SafetyRules:
        """Hazards for rewriting entries: the overwritten bytes; with --strict, all old code."""
        old_code = []
        replaced = []
        for region in regions:
            if region is not wanted:
                low, high = region.code_range
                old_code.append((low, high, f"level {region.level} patch code"))
            for site in region.sites:
                replaced.append((site.entry, site.entry + site_size(region, site), site.function))
        return SafetyRules.build(
            [(s.patch_address, s.function) for s in changing],
            [],
            replaced + old_code,
            self.policy.strict,
        )

    def _switch(self, regions: list[Region], wanted: Region | None) -> None:
        """Rewrite the entries with every thread stopped at a safe moment (BusyError if none).

        Old regions nothing uses any more are unmapped in the same stop window.
        """
        desired = self._desired_bytes(regions, wanted)
        old = [r for r in regions if r is not wanted]
        retire_rules = self._retire_rules(old)
        backoff = self.policy.first_backoff
        reason: str | None = "no attempt made"
        for attempt in range(1, self.policy.attempts + 1):
            self.outcome.attempts = attempt
            current = {addr: self.memory.read(addr, JMP_SIZE) for addr in desired}
            changing = [site for addr, (data, site) in desired.items() if current[addr] != data]
            rules = self._switch_rules(regions, wanted, changing)
            maps = read_maps(self.pid)
            with critical_section(self.policy.realtime), StoppedProcess(self.pid) as stopped:
                views = self._stop_and_view(stopped, maps)
                reason = _first_hazard(views, rules) if views is not None else stopped.why_not
                if reason is None and views is not None:
                    self._hook("stopped")
                    self._write(regions, wanted, desired, current)
                    unused = bool(old) and _first_hazard(views, retire_rules) is None
                    stopped.release()
                    self.outcome.pause_us = stopped.pause_us
                    if stopped.gone():
                        raise ProcessGoneError(f"process {self.pid} exited during the switch")
                    self._hook("switched")
                    if unused and not self.policy.keep_old_levels:
                        # Nothing ran in or would return into the old code at the switch, and
                        # nothing can enter it since: unmap it with just one thread stopped.
                        self._unmap(old)
                    return
            if stopped.gone():
                raise ProcessGoneError(f"process {self.pid} exited")
            time.sleep(backoff)
            backoff = min(backoff * 2, self.policy.max_backoff)
        raise BusyError(f"no safe moment after {self.policy.attempts} attempts: {reason}")

    def _stop_and_view(
        self, stopped: StoppedProcess, maps: list[Mapping]
    ) -> list[ThreadView] | None:
        """Stop every thread and capture what the safety check needs; None when some thread
        did not stop in time (the reason is in ``stopped.why_not``; the caller retries)."""
        try:
            stopped.stop_all()
        except BusyError as exc:
            stopped.why_not = str(exc)
            return None
        return [
            ThreadView.capture(t.tid, t.regs, self.memory, maps) for t in stopped.threads.values()
        ]

    def _write(
        self,
        regions: list[Region],
        wanted: Region | None,
        desired: dict[int, tuple[bytes, SiteRecord]],
        current: dict[int, bytes],
    ) -> None:
        """All threads are stopped: mark intent, write sites, then record the new states."""
        if wanted is None:
            for region in regions:
                if region.state == State.ACTIVE:
                    set_state(self.memory, region, State.REVERTING)
        for address, (data, _) in desired.items():
            if current[address] != data:
                self.memory.write(address, data)
                self._hook("site-written")
        if wanted is not None:
            set_state(self.memory, wanted, State.ACTIVE)
        for region in regions:
            if region is not wanted:
                set_state(self.memory, region, State.RETIRED)

    @staticmethod
    def _retire_rules(regions: list[Region]) -> SafetyRules:
        return SafetyRules.build(
            [], [(*r.code_range, f"level {r.level} patch code") for r in regions], [], strict=False
        )

    def _retire(self, regions: list[Region]) -> None:
        """Unmap REGIONS once no thread executes in or may return into their code."""
        mapped = {r.start for r in self.regions()}
        regions = [r for r in regions if r.start in mapped]
        if not regions:
            return
        rules = self._retire_rules(regions)
        backoff = self.policy.first_backoff
        reason: str | None = "no attempt made"
        for _ in range(self.policy.attempts):
            maps = read_maps(self.pid)
            with critical_section(self.policy.realtime), StoppedProcess(self.pid) as stopped:
                views = self._stop_and_view(stopped, maps)
                reason = _first_hazard(views, rules) if views is not None else stopped.why_not
                if reason is None:
                    self._unmap_stopped(stopped, regions)
                    stopped.release()
                    self.outcome.retire_pause_us = stopped.pause_us
                    return
            if stopped.gone():
                raise ProcessGoneError(f"process {self.pid} exited")
            time.sleep(backoff)
            backoff = min(backoff * 2, self.policy.max_backoff)
        self.outcome.notes.append(
            f"old patch code still in use ({reason}); it stays mapped until a later run"
        )

    def _unmap_stopped(self, stopped: StoppedProcess, regions: list[Region]) -> None:
        with _Injection(self, stopped) as injector:
            for region in regions:
                unmap_region(injector, region)

    # -- injected work ----------------------------------------------------------

    def injecting(self) -> _Injection:
        return _Injection(self)

    def _unmap(self, regions: list[Region]) -> None:
        with self.injecting() as injector:
            for region in regions:
                unmap_region(injector, region)

    def _tidy_leftovers(self) -> None:
        """Close memfds and unmap headerless regions a killed patcher left; restore the gadget."""
        fds = leaked_memfds(self.pid)
        broken = unreadable_regions(self.pid, self.memory)
        if fds or broken:
            with self.injecting() as injector:
                close_fds(injector, fds)
                for start, end in broken:
                    injector.call(SYS_MUNMAP, start, end - start, what="munmap")
        if self.gadget is None:
            return
        module, home = self.gadget
        if self.memory.read(home, len(GADGET)) == GADGET:
            original = module.read_mapped_file(home, len(GADGET))
            if original != GADGET:
                self.memory.write(home, original)


def _first_hazard(views: list[ThreadView], rules: SafetyRules) -> str | None:
    for view in views:
        reason = view.hazard(rules)
        if reason is not None:
            return reason
    return None


def site_size(region: Region, site: SiteRecord) -> int:
    for item in region.document["sites"]:
        if item["patch_address"] == site.patch_address:
            return int(item.get("size", JMP_SIZE))
    return JMP_SIZE


class _Injection:
    """Stop one seccomp-free thread and inject through it; always restore and release."""

    def __init__(self, patcher: ProcessPatcher, stopped: StoppedProcess | None = None) -> None:
        self.patcher = patcher
        self.owns_threads = stopped is None
        self.stopped = stopped or StoppedProcess(patcher.pid)
        self.injector: Injector | None = None

    def __enter__(self) -> Injector:
        if self.patcher.gadget is None:
            raise RefusedError("no executable mapping has room for the injection gadget")
        _, home = self.patcher.gadget
        self._section = critical_section(self.patcher.policy.realtime and self.owns_threads)
        self._section.__enter__()
        try:
            thread = self.stopped.injection_thread()
            self.injector = Injector(self.patcher.memory, thread.tid, home, hook=self.patcher._hook)
            self.injector.install()
        except BaseException:
            self._close()
            raise
        return self.injector

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        try:
            if self.injector is not None:
                with contextlib.suppress(OSError, ProcessGoneError):
                    self.injector.uninstall()
                thread = self.stopped.threads.get(self.injector.tid)
                if thread is not None:
                    thread.signals.extend(self.injector.signals)
        finally:
            if self.owns_threads:
                self.stopped.release()
            self._section.__exit__(None, None, None)
