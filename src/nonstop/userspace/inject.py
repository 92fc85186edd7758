"""Crash-safe syscall injection through one stopped, seccomp-free thread.

The injected thread runs a small gadget: ``syscall`` followed by code that
restores every register from a block the patcher wrote below the thread's
red zone and returns to where the thread was. Normally the patcher stops the
thread at the syscall's entry and exit (PTRACE_SYSCALL), reads the result and
puts the registers back itself, so the gadget's tail never runs. If the
patcher is killed in between, the kernel releases the thread, and the tail
restores its state and resumes it: a thread is never left running on
borrowed registers. (Syscall-stops are used rather than single-stepping
because a thread released from a single-step trap by a dying tracer would
receive SIGTRAP and die.)

The gadget lives in alignment padding after the end of an executable segment
(bytes no code ever reaches) and those bytes are put back afterwards.

A thread interrupted inside a syscall shows ``orig_rax`` = the syscall and
``rax`` = -ERESTART*. The injection sets ``orig_rax`` = -1 so the kernel
restarts nothing in the middle; afterwards the thread is put back exactly as
the kernel's own restart would leave it (RIP on its ``syscall`` instruction,
RAX the syscall number, or ``restart_syscall`` which resumes a sleep with its
remaining time), so no sleep wakes early. The gadget's crash path does the
same.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from nonstop.userspace import ptrace
from nonstop.userspace.errors import BusyError, EngineError, ProcessGoneError, PtraceError
from nonstop.userspace.image import LoadedModule
from nonstop.userspace.memory import ProcessMemory

# syscall; pop rbx rcx rdx rsi rdi rbp r8-r15 rax; popfq; pop rsp; ret 0x80
GADGET = bytes.fromhex(
    "0f05 5b 59 5a 5e 5f 5d 4158 4159 415a 415b 415c 415d 415e 415f 58 9d 5c c28000"
)
_RESTORED = (
    *("rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9"),
    *("r10", "r11", "r12", "r13", "r14", "r15"),
)
RED_ZONE = 128
SCRATCH = 512
ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516
NR_RESTART_SYSCALL = 219
TF = 0x100
STEP_TIMEOUT = 10.0
"""Generous: a thread on a crowded machine may wait long for a CPU (crash-safe meanwhile)."""

SYS_MMAP, SYS_MPROTECT, SYS_MUNMAP, SYS_CLOSE, SYS_MEMFD_CREATE = 9, 10, 11, 3, 319


class _DataPointer:
    """Stands for the address of the injected DATA among a syscall's arguments."""


DATA = _DataPointer()


def gadget_home(module: LoadedModule) -> int | None:
    """An address in MODULE's executable mapping, after its code, with room for the gadget."""
    for seg in module.model.segments:
        if not seg.executable:
            continue
        start = module.base + seg.vaddr + seg.memsz
        start = (start + 15) & ~15
        page_end = (module.base + seg.vaddr + seg.memsz + 4095) & ~4095
        mapped = any(
            m.executable and m.start <= start and page_end <= m.end for m in module.mappings
        )
        if mapped and page_end - start >= len(GADGET):
            return start
    return None


def pick_gadget_home(modules: list[LoadedModule]) -> tuple[LoadedModule, int] | None:
    """The first of MODULES (target library first, then the others in a fixed order) with room
    for the gadget. The choice is deterministic, so a later run finds a gadget left behind."""
    for module in modules:
        home = gadget_home(module)
        if home is not None:
            return module, home
    return None


def _crash_resume(regs: ptrace.Regs) -> tuple[int, int]:
    """(rip, rax) at which the thread resumes correctly if the patcher dies mid-injection."""
    if regs.signed("orig_rax") >= 0:
        error = -regs.signed("rax")
        if error == ERESTART_RESTARTBLOCK:
            return regs.rip - 2, NR_RESTART_SYSCALL
        if error in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND):
            return regs.rip - 2, regs.orig_rax
    return regs.rip, regs.rax


@dataclass
class Injector:
    """Runs syscalls inside process PID through thread TID (which the caller keeps stopped)."""

    memory: ProcessMemory
    tid: int
    gadget: int
    saved_gadget_bytes: bytes = b""
    signals: list[int] = field(default_factory=list)
    """Signals that arrived while stepping: the caller must deliver them on release."""
    hook: Callable[[str], None] | None = None
    """Called with "injecting" while the thread holds the injection registers (tests)."""

    def install(self) -> None:
        """Save the bytes at the gadget's home and write the gadget there (padding no code
        reaches: other threads may run meanwhile). When a killed patcher left the gadget
        there, :meth:`uninstall` leaves it; :meth:`ProcessPatcher.recover` puts back the
        file's bytes."""
        self.saved_gadget_bytes = self.memory.read(self.gadget, len(GADGET))
        if self.saved_gadget_bytes != GADGET:
            self.memory.write(self.gadget, GADGET)

    def uninstall(self) -> None:
        """Put back the bytes :meth:`install` saved."""
        if self.saved_gadget_bytes and self.saved_gadget_bytes != GADGET:
            self.memory.write(self.gadget, self.saved_gadget_bytes)

    def syscall(self, number: int, *args: int | _DataPointer, data: bytes = b"") -> int:
        """Run syscall NUMBER(ARGS) in the thread and return its raw result.

        DATA is copied to the thread's stack scratch area; an argument given as
        ``inject.DATA`` is replaced by its address there.
        """
        if len(data) > SCRATCH:
            raise EngineError("injected data too large")
        saved = ptrace.get_regs(self.tid)
        resume_rip, resume_rax = _crash_resume(saved)
        return_slot = saved.rsp - RED_ZONE - 8
        block = (return_slot - 17 * 8 - SCRATCH) & ~0xF
        data_address = block + 17 * 8
        values = [getattr(saved, name) for name in _RESTORED]
        values += [resume_rax, saved.eflags & ~TF, return_slot]
        self.memory.write(block, struct.pack("<17Q", *values) + data)
        self.memory.write(return_slot, struct.pack("<Q", resume_rip))
        regs = saved.copy()
        regs.rip = self.gadget
        regs.rsp = block
        regs.rax = number
        regs.orig_rax = (1 << 64) - 1
        regs.eflags &= ~TF
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args, strict=False):
            actual = data_address if isinstance(value, _DataPointer) else value
            setattr(regs, name, actual & (1 << 64) - 1)
        ptrace.set_regs(self.tid, regs)
        after = saved
        try:
            if self.hook is not None:
                self.hook("injecting")
            self._run_to_syscall_stop(number, entry=True)
            after = self._run_to_syscall_stop(number, entry=False)
        finally:
            # Put the thread back as the kernel would have: an interrupted syscall restarts.
            restored = saved.copy()
            restored.rip, restored.rax = resume_rip, resume_rax
            restored.orig_rax = (1 << 64) - 1
            with contextlib.suppress(ProcessGoneError):
                ptrace.set_regs(self.tid, restored)
        return after.signed("rax")

    def _run_to_syscall_stop(self, number: int, entry: bool) -> ptrace.Regs:
        """Resume the thread to the entry (or exit) stop of the injected syscall."""
        while True:
            ptrace.resume_to_syscall(self.tid)
            try:
                stop = ptrace.wait_stop(self.tid, STEP_TIMEOUT)
            except PtraceError:
                # The gadget puts the thread back by itself whenever it gets to run.
                raise BusyError(f"thread {self.tid} got no CPU for the injected syscall") from None
            if stop.exited:
                raise ProcessGoneError(f"thread {self.tid} exited during injection")
            if stop.signal:
                self.signals.append(stop.signal)  # delivered again when the thread is released
                continue
            if stop.syscall:
                regs = ptrace.get_regs(self.tid)
                expected = self.gadget + 2
                if regs.rip != expected or (entry and regs.orig_rax != number):
                    where = "entry" if entry else "exit"
                    raise EngineError(
                        f"thread {self.tid} stopped at an unexpected syscall {where} "
                        f"(rip {regs.rip:#x}, gadget {self.gadget:#x}, "
                        f"orig_rax {regs.signed('orig_rax')}, expected {number})"
                    )
                return regs

    def call(
        self, number: int, *args: int | _DataPointer, data: bytes = b"", what: str = ""
    ) -> int:
        """SYSCALL, raising EngineError when it returns an error code."""
        result = self.syscall(number, *args, data=data)
        if -4096 < result < 0:
            raise EngineError(f"injected {what or number} failed in the target: errno {-result}")
        return result
