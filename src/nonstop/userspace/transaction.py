"""Apply, replace and revert for one process, and crash recovery, under the process lock.

Every change goes through one move, :meth:`ProcessPatcher.reconcile`: make one
chosen region's code run for every entry site of a target (or the original
code everywhere), then retire and unmap every other region. Entries jump to
the dispatch stubs of a level (``dispatch``), which test the level's commit
flag, so a move is atomic. With every thread stopped:

1. before the commit, entries are pointed at the wanted level's stubs; its flag
   is still 0, so they run what ran before: nothing changes;
2. the commit is one aligned write: the wanted level's flag to 1 (apply,
   replace), or the running level's flag to 0 (revert);
3. after it, entries that must hold the original bytes get them back: nothing
   changes either, the committed state already runs the original code there.

Then, with the threads running again, the wanted level's fallback slots are
pointed at its own original-code trampolines (no thread reads them while its
flag is 1), states are recorded, and old levels are unmapped once nothing
runs in or may return into them. Whatever instant a patcher dies at, every
function of a target runs its old level or every function its new one. The
next run reads the flags and states (:func:`region.running`): a committed
level is finished, an uncommitted switch is rolled back, leftovers removed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nonstop.userspace.dispatch import STUB_SIZE
from nonstop.userspace.errors import BusyError, ProcessGoneError, RefusedError
from nonstop.userspace.image import LoadedModule
from nonstop.userspace.inject import GADGET, Injector, pick_gadget_home
from nonstop.userspace.memory import ProcessMemory
from nonstop.userspace.procfs import MapIndex, read_maps
from nonstop.userspace.region import (
    PAGE,
    Region,
    State,
    close_fds,
    commit_bytes,
    find_regions,
    leaked_memfds,
    running,
    set_state,
    unmap_region,
)
from nonstop.userspace.safety import SafetyRules, ThreadView
from nonstop.userspace.sites import JMP_SIZE
from nonstop.userspace.stopwindow import StoppedProcess, critical_section

Hook = Callable[[str, int], None]


@dataclass
class SwitchPolicy:
    """How a switch is tried: at most ATTEMPTS stop windows, sleeping FIRST_BACKOFF seconds
    (doubled each time, up to MAX_BACKOFF) between them; STRICT also waits until no thread runs
    in or may return into a replaced function; REALTIME runs the windows SCHED_FIFO."""

    strict: bool = False
    attempts: int = 12
    first_backoff: float = 0.002
    max_backoff: float = 0.1
    realtime: bool = True
    hook: Hook | None = None
    keep_old_levels: bool = False


@dataclass
class Outcome:
    """What this patcher's moves measured (pauses in microseconds, first stop to last
    release) and noted."""

    pause_us: int = 0
    retire_pause_us: int = 0
    """A second stop window, when old code was still in use at the switch."""
    attempts: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Move:
    """Every write of one switch, decided before any thread stops (see the module docstring)."""

    before: dict[int, bytes] = field(default_factory=dict)
    """Entry address -> a jump into the wanted level's stub, written before the commit."""
    commit: Region | None = None
    """The region whose flag is written: the one write that changes what runs."""
    after: dict[int, bytes] = field(default_factory=dict)
    """Entry address -> its original bytes, written after the commit."""
    functions: dict[int, str] = field(default_factory=dict)
    """Every known site's function, by entry address."""
    dispatching: list[tuple[int, int, str]] = field(default_factory=list)
    """Stubs whose fallback slots are retargeted after the commit: no thread may be inside."""

    @property
    def empty(self) -> bool:
        """Nothing to write: what the move wants already runs."""
        return not (self.before or self.after or self.commit)

    def overwritten(self) -> list[tuple[int, str]]:
        """(entry address, function) of every entry the move rewrites."""
        return [(address, self.functions[address]) for address in {**self.before, **self.after}]


def plan_move(regions: list[Region], wanted: Region | None, live: dict[int, bytes]) -> Move:
    """The writes that make WANTED (None: the original code) run, given the LIVE entry bytes."""
    move = Move()
    final: dict[int, bytes] = {}
    for region in regions:
        for site in region.sites:
            move.functions.setdefault(site.patch_address, site.function)
            final.setdefault(site.patch_address, site.original)
    if wanted is not None:
        for site in wanted.sites:
            jump = wanted.jump_for(site)
            if not site.passthrough:
                final[site.patch_address] = jump
            if live[site.patch_address] != jump and (
                not site.passthrough
                or (not wanted.committed and live[site.patch_address] != site.original)
            ):
                # A pass-through entry still jumping into the previous level goes through
                # this level until the commit, so that it changes together with the others.
                move.before[site.patch_address] = jump
        if not wanted.committed:
            move.commit = wanted
            move.dispatching = [
                (wanted.start + s.stub + 1, wanted.start + s.stub + STUB_SIZE, s.function)
                for s in wanted.sites
            ]
    else:
        move.commit = running(regions)
    for address, data in final.items():
        if move.before.get(address, live[address]) != data:
            move.after[address] = data
    return move


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
        """The well-formed regions in the process now (of BUILD_ID only, when given);
        RefusedError when patch memory of another nonstop header version is mapped."""
        found = find_regions(self.pid, self.memory)
        return [r for r in found if build_id is None or r.build_id == build_id]

    def _live(self, regions: list[Region]) -> dict[int, bytes]:
        addresses = {site.patch_address for region in regions for site in region.sites}
        return {address: self.memory.read(address, JMP_SIZE) for address in addresses}

    # -- the one move ----------------------------------------------------------

    def recover(self, build_id: str) -> None:
        """Finish whatever a previous patcher left half-done for BUILD_ID, and tidy up."""
        self._tidy_leftovers()
        regions = self.regions(build_id)
        if not regions:
            return
        wanted = running(regions)
        settled = wanted is not None and wanted.state == State.ACTIVE and len(regions) == 1
        if settled and plan_move(regions, wanted, self._live(regions)).empty:
            return
        self.reconcile(regions, wanted)

    def reconcile(self, regions: list[Region], wanted: Region | None) -> None:
        """Make WANTED run at every site of REGIONS (None: the original code); unmap the rest.

        BusyError when the switch found no safe moment within the retry bound;
        then nothing changed. Old code still in use stays mapped (RETIRED) until
        a later run finds nothing executing in or returning into it.
        """
        current = running(regions)
        if wanted is None and current is not None:
            self._own_fallbacks(current)  # so that its flag at 0 means the original code
        unused = self._switch(regions, wanted)
        self._finish(regions, wanted)
        leftovers = [r for r in regions if r is not wanted]
        if leftovers and not self.policy.keep_old_levels:
            if unused:
                # Nothing ran in or would return into the old code at the switch, and
                # nothing can enter it since: unmap it with just one thread stopped.
                self._unmap(leftovers)
            else:
                self._retire(leftovers)

    def discard(self, region: Region) -> None:
        """Remove a PREPARED region no site jumps to (a switch that never happened)."""
        self._unmap([region])

    def _own_fallbacks(self, region: Region) -> None:
        """Point REGION's fallback slots at its own original-code trampolines. Only for a
        committed region: its stubs never read the slots while its flag is 1."""
        for site in region.sites:
            own = region.start + site.trampoline
            if self.memory.read_u64(region.start + site.slot) != own:
                self.memory.write(region.start + site.slot, own.to_bytes(8, "little"))
                self._hook("slot-written")

    def _finish(self, regions: list[Region], wanted: Region | None) -> None:
        """After the commit: the wanted level no longer refers to older ones; record states
        (older ones RETIRED first, so a committed PREPARED region is always the newest)."""
        if wanted is not None:
            self._own_fallbacks(wanted)
        for region in regions:
            if region is not wanted and region.state != State.RETIRED:
                set_state(self.memory, region, State.RETIRED)
        if wanted is not None and wanted.state != State.ACTIVE:
            set_state(self.memory, wanted, State.ACTIVE)

    def _switch_rules(
        self, regions: list[Region], wanted: Region | None, move: Move
    ) -> SafetyRules:
        """Hazards for rewriting entries: the overwritten bytes; the stubs whose slots change;
        with --strict, all old code."""
        replaced = []
        for region in regions:
            if region is not wanted:
                low, high = region.code_range
                replaced.append((low, high, f"level {region.level} patch code"))
            for site in region.sites:
                replaced.append((site.entry, site.entry + site.size, site.function))
        return SafetyRules.build(
            move.overwritten(),
            [],
            replaced,
            self.policy.strict,
            dispatching=move.dispatching,
        )

    def _switch(self, regions: list[Region], wanted: Region | None) -> bool:
        """Write the move with every thread stopped at a safe moment (BusyError if none).

        True when no thread executed in or could return into the other regions' code at
        that moment: nothing can enter it afterwards, so it can be unmapped at once.
        """
        old = [r for r in regions if r is not wanted]
        retire_rules = self._retire_rules(old)
        backoff = self.policy.first_backoff
        reason: str | None = "no attempt made"
        for attempt in range(1, self.policy.attempts + 1):
            move = plan_move(regions, wanted, self._live(regions))
            if move.empty:
                return False
            self.outcome.attempts = attempt
            rules = self._switch_rules(regions, wanted, move)
            self._touch(move)
            maps = MapIndex(read_maps(self.pid))
            with critical_section(self.policy.realtime), StoppedProcess(self.pid) as stopped:
                views = self._stop_and_view(stopped, maps)
                reason = _first_hazard(views, rules) if views is not None else stopped.why_not
                if reason is None and views is not None:
                    self._hook("stopped")
                    self._write(move, wanted)
                    stopped.release()
                    self.outcome.pause_us = stopped.pause_us
                    if stopped.gone():
                        raise ProcessGoneError(f"process {self.pid} exited during the switch")
                    self._hook("switched")
                    # Judged on the views taken while every thread was stopped.
                    return bool(old) and _first_hazard(views, retire_rules) is None
            if stopped.gone():
                raise ProcessGoneError(f"process {self.pid} exited")
            time.sleep(backoff)
            backoff = min(backoff * 2, self.policy.max_backoff)
        raise BusyError(f"no safe moment after {self.policy.attempts} attempts: {reason}")

    def _stop_and_view(self, stopped: StoppedProcess, maps: MapIndex) -> list[ThreadView] | None:
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

    def _touch(self, move: Move) -> None:
        """Make every page the stop window writes private now, not inside the window (the
        first write to a page of a file mapping copies it): write back a byte it already holds.
        Nothing changes for the target; only the patcher writes these bytes."""
        addresses = [*move.before, *move.after]
        if move.commit is not None:
            addresses.append(move.commit.flag_address)
        for address in {address & ~(PAGE - 1): address for address in addresses}.values():
            self.memory.write(address, self.memory.read(address, 1))

    def _write(self, move: Move, wanted: Region | None) -> None:
        """All threads are stopped: entries that keep what runs, the commit, then the rest.
        Inside the stop window: writes only (pages made private beforehand by :meth:`_touch`)."""
        for address, data in move.before.items():
            self.memory.write(address, data)
            self._hook("site-written")
        if move.commit is not None:
            on = move.commit is wanted
            self.memory.write(move.commit.flag_address, commit_bytes(on))
            move.commit.committed = on
            self._hook("committed")
        for address, data in move.after.items():
            self.memory.write(address, data)
            self._hook("site-written")

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
            maps = MapIndex(read_maps(self.pid))
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
        """A context that stops one seccomp-free thread, installs the gadget and gives an
        Injector; on exit the gadget's bytes are put back and the thread released."""
        return _Injection(self)

    def _unmap(self, regions: list[Region]) -> None:
        with self.injecting() as injector:
            for region in regions:
                unmap_region(injector, region)

    def _tidy_leftovers(self) -> None:
        """Close memfds a killed patcher left open and restore the gadget. (Patch memory is
        mapped only once filled, so a mapping without a valid header is not a leftover but
        foreign: it is left alone.)"""
        fds = leaked_memfds(self.pid)
        if fds:
            with self.injecting() as injector:
                close_fds(injector, fds)
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
