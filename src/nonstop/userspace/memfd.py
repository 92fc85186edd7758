"""Taking the patch memfd out of the target, and proving it is the one that was created.

The memfd is created inside the target (it must hold it to map it), but its fd
number is in a table the target controls: another thread can dup2() any file
it holds onto that number at any moment. So the agent never opens
``/proc/PID/fd/N`` (that would open the file anew with root's rights). It
duplicates the target's own open file with pidfd_getfd (Linux 5.6), which
keeps the target's access mode, and then checks that very file object before
writing through it: a regular file on the kernel's internal memfd mount with
no name in any directory, the expected memfd name, still empty, opened
read-write and not sealed against writes. Whatever the target swaps in, root
writes at most into a memfd the target could write itself.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
from functools import cache

from nonstop.userspace.errors import ProcessGoneError, RefusedError

SYS_PIDFD_GETFD = 438
F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE = 0x2, 0x4, 0x8, 0x10
_WRITE_SEALS = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE
_libc = ctypes.CDLL(None, use_errno=True)


@cache
def memfd_device() -> int:
    """st_dev of the kernel's internal memfd mount (one a memfd of our own shows)."""
    fd = os.memfd_create("nonstop-probe", os.MFD_CLOEXEC)
    try:
        return os.fstat(fd).st_dev
    finally:
        os.close(fd)


def take_fd(pid: int, fd: int) -> int:
    """A duplicate, in this process, of the open file PID holds as FD (pidfd_getfd)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise ProcessGoneError(f"process {pid} is gone") from None
    try:
        taken = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if taken < 0:
            error = ctypes.get_errno()
            raise RefusedError(
                f"cannot take patch memory fd {fd} from process {pid}: "
                f"{os.strerror(error)} (pidfd_getfd needs Linux 5.6)"
            )
        return int(taken)
    finally:
        os.close(pidfd)


def check_fresh_memfd(fd: int, name: str) -> os.stat_result:
    """Its status when FD (of this process) is an empty, writable memfd called NAME; else
    RefusedError. Everything is read from the open file itself, never by a path."""
    status = os.fstat(fd)
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)  # EINVAL for anything but memfd/shmem
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        link, seals, mode = "", _WRITE_SEALS, -1
    fresh = (
        stat.S_ISREG(status.st_mode)
        and status.st_nlink == 0
        and status.st_size == 0
        and status.st_dev == memfd_device()
        and link == f"/memfd:{name} (deleted)"
        and not seals & _WRITE_SEALS
        and mode == os.O_RDWR
    )
    if not fresh:
        raise RefusedError(
            "the patch memory fd was replaced by another file inside the target: "
            "nothing was written"
        )
    return status


def write_all(fd: int, data: bytes) -> None:
    """Size the file to DATA and write it from offset 0."""
    os.ftruncate(fd, len(data))
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        written = os.pwrite(fd, view[offset:], offset)
        if written <= 0:
            raise OSError(f"patch memory write stopped at {offset} of {len(data)} bytes")
        offset += written
