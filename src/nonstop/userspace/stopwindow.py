"""Stopping threads of a process and always releasing them again.

Threads are seized (PTRACE_SEIZE with clone tracing, so threads created
meanwhile are attached and stopped at birth) and interrupted; the task list
is read again until no new thread appears. Every thread is released on every
path, with the signal it was stopped for delivered again. While threads are
stopped the patcher runs with Python's GC off and, when allowed, SCHED_FIFO so
other runnable threads cannot starve it (it never busy-waits: every wait
blocks).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from nonstop.userspace import ptrace
from nonstop.userspace.errors import BusyError, ProcessGoneError, PtraceError, RefusedError
from nonstop.userspace.procfs import ThreadCounter, is_alive, list_tasks, task_status

STOP_TIMEOUT = 2.0
LATE_STOP_TIMEOUT = 30.0
"""How long release waits for a thread that was interrupted but had not stopped yet: it cannot
be detached while it runs, and left alone it would stop later and stay stopped."""
FIFO_PRIORITY = 10


@dataclass
class StoppedThread:
    """One thread in a ptrace-stop; REGS as read at that stop."""

    tid: int
    regs: ptrace.Regs
    signals: list[int] = field(default_factory=list)
    """Signals to deliver again on release (the first through PTRACE_DETACH)."""
    at_syscall_stop: bool = False
    """Adopted in a syscall-stop left by an earlier run: never inject through it."""


@contextlib.contextmanager
def critical_section(realtime: bool) -> Iterator[None]:
    """GC off, the wait timeouts' SIGALRM handler in place and, if REALTIME and permitted,
    SCHED_FIFO for the patcher while it stops threads: set up before the first thread stops."""
    was_enabled = gc.isenabled()
    gc.disable()
    previous = None
    if realtime:
        try:
            previous = (os.sched_getscheduler(0), os.sched_getparam(0))
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
        except (OSError, AttributeError):
            previous = None
    try:
        with ptrace.alarms():
            yield
    finally:
        if previous is not None:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, previous[0], previous[1])
        if was_enabled:
            gc.enable()


class StoppedProcess:
    """Threads of PID stopped under ptrace; use as a context manager so they are always released."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads: dict[int, StoppedThread] = {}
        self.unstopped: set[int] = set()
        """Seized and interrupted, stop not seen yet."""
        self.why_not: str | None = None
        """Why stopping every thread failed, for the caller's busy report."""
        self.first_stop: float | None = None
        self.pause_us: int = 0
        """Microseconds from the first thread stopped to the end of the last release."""

    def __enter__(self) -> StoppedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def stop_all(self) -> None:
        """Stop every thread, including those born meanwhile (they are listed again until the
        kernel's thread count equals the threads stopped: an fstat, cheaper than a listing).

        BusyError when a thread does not stop within STOP_TIMEOUT, RefusedError when another
        tracer holds one, ProcessGoneError when no thread is left. Whatever was stopped stays
        stopped until :meth:`release`."""
        try:
            counter = ThreadCounter(self.pid)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessGoneError(f"process {self.pid} is gone") from None
        try:
            while True:
                new = [tid for tid in self._tasks() if tid not in self.threads]
                if not new:
                    break
                self._stop(new)
                if counter.count() == len(self.threads):
                    break
        finally:
            counter.close()
        if not self.threads:
            raise ProcessGoneError(f"process {self.pid} is gone")

    def _tasks(self) -> list[int]:
        try:
            return list_tasks(self.pid)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessGoneError(f"process {self.pid} is gone") from None

    def stop_one(self) -> StoppedThread:
        """Stop one thread that has no seccomp filter (needed to inject syscalls)."""
        for tid in self._tasks():
            if task_status(self.pid, tid).get("Seccomp") == "0":
                self._stop([tid])
                if tid in self.threads and _injectable(self.threads[tid]):
                    return self.threads[tid]
        raise RefusedError(f"process {self.pid} has no thread without a seccomp filter")

    def injection_thread(self) -> StoppedThread:
        """A stopped thread without seccomp filter and without a signal waiting on it."""
        for thread in self.threads.values():
            if _injectable(thread) and task_status(self.pid, thread.tid).get("Seccomp") == "0":
                return thread
        return self.stop_one()

    def _stop(self, tids: list[int]) -> None:
        seized = []
        for tid in tids:
            try:
                ptrace.seize(tid)
            except ProcessGoneError:
                continue
            except PtraceError as exc:
                if exc.errno != errno.EPERM:
                    raise
                tracer = task_status(self.pid, tid).get("TracerPid", "0")
                if tracer != str(os.getpid()):
                    raise RefusedError(
                        f"thread {tid} of process {self.pid} is traced by process {tracer}"
                    ) from None
                # Auto-attached through a clone event: it stops at birth, wait for that.
                seized.append((tid, False))
                continue
            seized.append((tid, True))
        if self.first_stop is None and seized:
            self.first_stop = time.perf_counter()
        self.unstopped.update(tid for tid, _ in seized)
        for tid, needs_interrupt in seized:
            if needs_interrupt:
                with contextlib.suppress(ProcessGoneError):
                    ptrace.interrupt(tid)
        with ptrace.deadline(STOP_TIMEOUT):
            for tid, _ in seized:
                self._collect(tid, None)

    def _collect(self, tid: int, timeout: float | None) -> None:
        """Wait for TID's stop and record it (BusyError when it does not come in time)."""
        try:
            stop = ptrace.wait_stop(tid, timeout)
            self.unstopped.discard(tid)
            if stop.exited:
                return
            regs = ptrace.get_regs(tid)
        except ProcessGoneError:
            self.unstopped.discard(tid)
            return
        except PtraceError:
            raise BusyError(f"thread {tid} of process {self.pid} did not stop in time") from None
        thread = StoppedThread(tid, regs, at_syscall_stop=stop.syscall)
        if stop.signal:
            thread.signals.append(stop.signal)
        self.threads[tid] = thread

    def release(self) -> None:
        """Detach every stopped thread, delivering again the signals they were stopped for."""
        # Interrupted but not stopped yet: it will stop, and must be detached then.
        left: dict[int, int] = dict.fromkeys(self.unstopped, 0)
        self.unstopped.clear()
        for thread in list(self.threads.values()):
            first, *rest = thread.signals or [0]
            for sig in rest:
                ptrace.tgkill(self.pid, thread.tid, sig)  # queue it again for the thread
            try:
                ptrace.detach(thread.tid, first)
            except ProcessGoneError:
                left[thread.tid] = first
            except PtraceError:
                pass
        self.threads.clear()
        if left:
            self._settle(left)
        if self.first_stop is not None:
            self.pause_us = int((time.perf_counter() - self.first_stop) * 1e6)
            self.first_stop = None

    def _settle(self, left: dict[int, int]) -> None:
        """Threads that were not in a stop at release: dying ones are reaped (else they stay
        zombies and the process cannot finish exiting), running ones (interrupted late, or an
        injection that timed out) are detached at their next stop, so none is left traced.

        This error path polls without blocking, with short sleeps: a dying group leader is
        reported only once its other threads are reaped, so waiting on one thread at a time
        could block."""
        deadline = time.monotonic() + LATE_STOP_TIMEOUT
        while left and time.monotonic() < deadline:
            for tid, sig in list(left.items()):
                try:
                    waited, status = os.waitpid(tid, os.WNOHANG | ptrace.WALL)
                except ChildProcessError:
                    del left[tid]
                    continue
                if waited == 0:
                    continue
                if os.WIFSTOPPED(status):
                    with contextlib.suppress(ProcessGoneError, PtraceError):
                        ptrace.detach(tid, sig)
                del left[tid]
            if left:
                time.sleep(0.001)

    def gone(self) -> bool:
        """The process no longer exists or is exiting (read from /proc, no ptrace)."""
        return not is_alive(self.pid)


def _injectable(thread: StoppedThread) -> bool:
    """No signal waiting to be delivered to it, and not parked in a syscall-stop."""
    return not thread.signals and not thread.at_syscall_stop
