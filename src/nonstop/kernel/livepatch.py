"""The livepatch sysfs driver: load, transition, revert, atomic replace, disable, unload.

One patch is one module; its sysfs directory ``/sys/kernel/livepatch/<module>``
has ``enabled`` (the target state) and ``transition`` (1 while tasks are still
being switched). Loading a livepatch module enables its patch and starts the
transition; a module built with ``replace = true`` makes every other patch go
away when its transition completes, which is how cumulative levels replace
each other. The driver never writes ``force`` unless the caller asks for it:
forcing skips the consistency check the transition exists for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nonstop.kernel.errors import KernelError
from nonstop.kernel.syscalls import ModuleSyscallError, load_module, unload_module
from nonstop.kernel.tasks import BlockingTask, blocking_tasks

SYSFS = Path("/sys/kernel/livepatch")
POLL_SECONDS = 0.02


class LivepatchError(KernelError):
    """A livepatch operation failed; the message says which and why in one line."""


class LoadRefusedError(LivepatchError):
    """The module was not loaded (refused by the kernel, or not loadable here): nothing changed."""


class TransitionTimeout(LivepatchError):
    """A transition did not finish in time and was reversed; BLOCKING names the tasks."""

    def __init__(self, message: str, blocking: list[BlockingTask], reverted: bool) -> None:
        super().__init__(message)
        self.blocking = blocking
        self.reverted = reverted


@dataclass(frozen=True)
class PatchStatus:
    """One loaded patch as sysfs showed it when read (it may change at any moment)."""

    name: str
    enabled: bool
    """The target state: 1 in ``enabled``, even while the transition to it is still running."""
    transition: bool
    """Tasks are still being switched to (or back from) the patch."""
    objects: tuple[str, ...]
    """Kernel objects the patch touches (``vmlinux`` or module names)."""


@dataclass
class TransitionReport:
    """What a completed apply or disable did (a failed one raises instead)."""

    patch: str
    seconds: float
    """Wall time from the load (or the ``enabled=0`` write) until the transition completed."""
    replaced: list[str] = field(default_factory=list)
    """Modules of the patches this one replaced (and that were unloaded)."""
    forced: bool = False
    """The transition was completed with ``force``: some tasks skipped the consistency check."""


class LivepatchDriver:
    """The livepatch subsystem under SYSFS, with task states read from PROC.

    It keeps no state of its own: every call reads sysfs afresh. Its mutating
    calls are not safe to run concurrently; the agent makes them only under its
    kernel state lock.
    """

    def __init__(self, sysfs: Path = SYSFS, proc: Path = Path("/proc")) -> None:
        self.sysfs = sysfs
        self.proc = proc

    def available(self) -> bool:
        """True if this kernel has livepatch support (CONFIG_LIVEPATCH: SYSFS exists)."""
        return self.sysfs.is_dir()

    def patches(self) -> list[PatchStatus]:
        """Every loaded patch, sorted by module name; empty without livepatch support.

        A patch freed while the list is being read is left out.
        """
        if not self.available():
            return []
        found = []
        for directory in sorted(self.sysfs.iterdir()):
            status = self.status(directory.name)
            if status is not None:
                found.append(status)
        return found

    def status(self, name: str) -> PatchStatus | None:
        """Patch NAME now, or None if it is not loaded (or was freed while being read)."""
        directory = self.sysfs / name
        try:
            enabled = (directory / "enabled").read_text().strip() == "1"
            transition = (directory / "transition").read_text().strip() == "1"
            objects = tuple(sorted(p.name for p in directory.iterdir() if p.is_dir()))
        except OSError:  # absent, or freed while we read it
            return None
        return PatchStatus(name, enabled, transition, objects)

    def apply(
        self, image: bytes, name: str, *, timeout: float, force: bool = False
    ) -> TransitionReport:
        """Load the livepatch module NAME and wait for its transition.

        On timeout the transition is reversed and the module unloaded, so the
        kernel is left exactly as before (TransitionTimeout names the blocking
        tasks); with FORCE the remaining tasks are switched by force instead.
        The modules of the patches this one replaced are unloaded too.

        LoadRefusedError and TransitionTimeout leave the kernel unchanged; any
        other LivepatchError (a reversal that did not finish, a module not
        freed) may leave it part-way, and the caller must not assume either state.
        """
        if not self.available():
            raise LoadRefusedError(f"{self.sysfs} is missing: this kernel has no livepatch support")
        before = {patch.name for patch in self.patches()}
        if name in before:
            raise LoadRefusedError(f"patch {name} is already loaded")
        started = time.monotonic()
        try:
            load_module(image, name)
        except ModuleSyscallError as exc:
            raise LoadRefusedError(str(exc)) from None
        forced = False
        if not self._wait_transition(name, timeout):
            if not force:
                blocking = blocking_tasks(1, self.proc)
                self._reverse(name, to_enabled=False, timeout=timeout)
                self._unload_when_freed(name, timeout)
                raise TransitionTimeout(
                    f"patch {name} did not finish its transition in {timeout:g} s; "
                    f"reverted and unloaded; blocked by {_names(blocking)}",
                    blocking,
                    reverted=True,
                )
            self._write(name, "force", "1")
            forced = True
            if not self._wait_transition(name, timeout):
                raise LivepatchError(f"patch {name} still in transition after force")
        seconds = time.monotonic() - started
        status = self.status(name)
        if status is None or not status.enabled:
            raise LivepatchError(f"module {name} loaded but left no enabled livepatch in sysfs")
        replaced = sorted(before - {patch.name for patch in self.patches()})
        for old in replaced:
            self._unload_when_freed(old, timeout)
        return TransitionReport(name, seconds, replaced, forced)

    def disable(self, name: str, *, timeout: float) -> TransitionReport:
        """Disable patch NAME (the original code comes back) and unload its module.

        On timeout the transition is reversed, so the patch stays fully applied.
        """
        if self.status(name) is None:
            raise LivepatchError(f"patch {name} is not loaded")
        started = time.monotonic()
        self._write(name, "enabled", "0")
        if not self._wait_transition(name, timeout):
            blocking = blocking_tasks(0, self.proc)
            self._reverse(name, to_enabled=True, timeout=timeout)
            raise TransitionTimeout(
                f"disabling {name} did not finish in {timeout:g} s; the patch stays applied; "
                f"blocked by {_names(blocking)}",
                blocking,
                reverted=True,
            )
        seconds = time.monotonic() - started
        self._unload_when_freed(name, timeout)
        return TransitionReport(name, seconds)

    def _reverse(self, name: str, *, to_enabled: bool, timeout: float) -> None:
        # Writing the opposite value to `enabled` mid-transition makes the kernel
        # walk the same tasks back; tasks still on the old code are already there.
        self._write(name, "enabled", "1" if to_enabled else "0")
        if not self._wait_transition(name, timeout):
            raise LivepatchError(f"patch {name}: the reversed transition did not finish either")

    def _wait_transition(self, name: str, timeout: float) -> bool:
        """True once NAME is out of transition (or freed); False after TIMEOUT seconds."""
        return _poll(lambda: _transition_over(self.status(name)), timeout)

    def _unload_when_freed(self, name: str, timeout: float) -> None:
        # The kernel frees a disabled or replaced patch asynchronously; its module
        # can only be removed after the sysfs directory is gone.
        if not _poll(lambda: self.status(name) is None, timeout):
            raise LivepatchError(f"patch {name} was not freed by the kernel in {timeout:g} s")
        try:
            unload_module(name, wait_seconds=timeout)
        except ModuleSyscallError as exc:
            raise LivepatchError(str(exc)) from None

    def _write(self, name: str, attribute: str, value: str) -> None:
        try:
            (self.sysfs / name / attribute).write_text(value)
        except OSError as exc:
            raise LivepatchError(f"cannot write {attribute}={value} for {name}: {exc}") from None


def _transition_over(status: PatchStatus | None) -> bool:
    return status is None or not status.transition


def _poll(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def _names(tasks: list[BlockingTask]) -> str:
    return ", ".join(task.describe() for task in tasks) or "no task found (kernel threads?)"
