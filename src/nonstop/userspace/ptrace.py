"""A thin ctypes layer over ptrace(2) and waitpid(2), x86_64 only.

Only what the engine needs: PTRACE_SEIZE (never PTRACE_ATTACH, which sends
SIGSTOP), PTRACE_INTERRUPT, register access, syscall-stops and detach. Waiting
blocks (never a busy loop: the patcher may run SCHED_FIFO) with a timeout so
a thread stuck in uninterruptible sleep cannot hang the patcher.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from nonstop.userspace.errors import ProcessGoneError, PtraceError

PTRACE_SYSCALL = 24
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACECLONE = 0x8
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_STOP = 128
WALL = 0x40000000
SYS_TGKILL = 234

_libc = ctypes.CDLL(None, use_errno=True)
_ptrace = _libc.ptrace
_ptrace.restype = ctypes.c_long
_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


class Regs(ctypes.Structure):
    """struct user_regs_struct of x86_64."""

    _fields_ = [
        (name, ctypes.c_ulonglong)
        for name in (
            *("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8"),
            *("rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp"),
            *("ss", "fs_base", "gs_base", "ds", "es", "fs", "gs"),
        )
    ]

    def copy(self) -> Regs:
        """A separate structure with the same values (to change one set and keep the other)."""
        clone = Regs()
        ctypes.pointer(clone)[0] = self
        return clone

    def signed(self, name: str) -> int:
        """Register NAME as a signed 64-bit value (rax holds -errno after a syscall, orig_rax
        is -1 outside one)."""
        value: int = getattr(self, name)
        return value - (1 << 64) if value >= 1 << 63 else value


def _call(request: int, tid: int, addr: int = 0, data: int | ctypes.c_void_p = 0) -> int:
    result = _ptrace(request, tid, ctypes.c_void_p(addr), data)
    if result == -1:
        err = ctypes.get_errno()
        if err == errno.ESRCH:
            raise ProcessGoneError(f"thread {tid} is gone or not stopped")
        raise PtraceError(f"ptrace request {request:#x} on {tid}: {os.strerror(err)}", err)
    return int(result)


def tgkill(pid: int, tid: int, sig: int) -> None:
    """Send SIG to thread TID of PID (errors ignored: the thread may be gone)."""
    _libc.syscall(SYS_TGKILL, pid, tid, sig)


def seize(tid: int) -> None:
    """Attach to TID without stopping it (no SIGSTOP), tracing its clones: threads it creates
    are attached and stop at birth. PtraceError with EPERM when TID is traced already."""
    # TRACESYSGOOD marks syscall-stops (SIGTRAP|0x80): should the patcher die in one, the
    # kernel has no real signal to deliver to the thread afterwards.
    _call(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACECLONE | PTRACE_O_TRACESYSGOOD)


def interrupt(tid: int) -> None:
    """Ask seized TID to stop; returns at once: collect the stop with :func:`wait_stop`."""
    _call(PTRACE_INTERRUPT, tid)


def detach(tid: int, sig: int = 0) -> None:
    """Release TID, delivering SIG (0: none). TID must be in a ptrace-stop: a running one
    gives ProcessGoneError (ESRCH) and stays traced."""
    _call(PTRACE_DETACH, tid, 0, sig)


def resume_to_syscall(tid: int) -> None:
    """Resume TID until its next syscall entry or exit."""
    _call(PTRACE_SYSCALL, tid)


def get_regs(tid: int) -> Regs:
    """TID's registers; TID must be in a ptrace-stop (ProcessGoneError otherwise)."""
    regs = Regs()
    _call(PTRACE_GETREGS, tid, 0, ctypes.c_void_p(ctypes.addressof(regs)))
    return regs


def set_regs(tid: int, regs: Regs) -> None:
    """Set TID's registers, effective when it resumes; TID must be in a ptrace-stop."""
    _call(PTRACE_SETREGS, tid, 0, ctypes.c_void_p(ctypes.addressof(regs)))


@dataclass(frozen=True)
class Stop:
    """How a waited-for thread stopped. SIGNAL is a signal to deliver again on release."""

    tid: int
    exited: bool = False
    signal: int = 0
    event: int = 0
    syscall: bool = False


class _Timeout(Exception):
    pass


def _raise_timeout(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


@contextmanager
def alarms() -> Iterator[None]:
    """Make :func:`deadline` cheap for a while (a stop window): the SIGALRM handler is installed
    once, and an interval timer someone else armed (a test runner's timeout) is paused and put
    back afterwards (main thread only: SIGALRM needs it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    started = time.monotonic()
    earlier_delay, earlier_interval = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if earlier_delay > 0:
            left = max(earlier_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, earlier_interval)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Interrupt a blocking wait after SECONDS (main thread only). Inside :func:`alarms` it only
    arms the timer (an enclosing deadline gets its remaining time back); otherwise it sets up
    :func:`alarms` around itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGALRM) is not _raise_timeout:
        with alarms(), deadline(seconds):
            yield
        return
    started = time.monotonic()
    enclosing, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        left = max(enclosing - (time.monotonic() - started), 0.001) if enclosing > 0 else 0
        signal.setitimer(signal.ITIMER_REAL, left)


def wait_stop(tid: int, timeout: float | None) -> Stop:
    """Block until TID reports a ptrace-stop or its exit; PtraceError after TIMEOUT seconds.

    TIMEOUT None: the caller armed a :func:`deadline` around several waits (one timer, not one
    per thread, keeps the stop window short).
    """
    try:
        if timeout is None:
            _, status = os.waitpid(tid, WALL)
        else:
            with deadline(timeout):
                _, status = os.waitpid(tid, WALL)
    except _Timeout:
        raise PtraceError(f"thread {tid} did not stop in time") from None
    except ChildProcessError:
        raise ProcessGoneError(f"thread {tid} is gone") from None
    if os.WIFEXITED(status) or os.WIFSIGNALED(status):
        return Stop(tid, exited=True)
    sig = os.WSTOPSIG(status)
    event = status >> 16
    if event:
        return Stop(tid, event=event)
    if sig == signal.SIGTRAP | 0x80:
        return Stop(tid, syscall=True)
    return Stop(tid, signal=sig)
