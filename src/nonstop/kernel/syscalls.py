"""Loading and removing kernel modules with the raw system calls (no kmod tools needed).

``finit_module`` takes a file descriptor, so a module is loaded straight from
an anonymous memory file holding the verified bundle payload: nothing is
written to disk between verification and loading.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time

from nonstop.kernel.errors import KernelError

SYS_FINIT_MODULE = 313  # x86_64
SYS_DELETE_MODULE = 176  # x86_64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class ModuleSyscallError(KernelError):
    """The kernel refused to load or remove a module; ``errno`` says why."""

    def __init__(self, message: str, error: int) -> None:
        super().__init__(message)
        self.errno = error


def _describe(error: int) -> str:
    return f"{errno.errorcode.get(error, str(error))}: {os.strerror(error)}"


def load_module(image: bytes, name: str, params: str = "") -> None:
    """Load the module IMAGE (the bytes of a .ko file) with finit_module."""
    fd = os.memfd_create(f"nonstop-{name}", os.MFD_CLOEXEC)
    try:
        os.write(fd, image)
        os.lseek(fd, 0, os.SEEK_SET)
        result = _libc.syscall(SYS_FINIT_MODULE, fd, params.encode(), 0)
        if result != 0:
            error = ctypes.get_errno()
            hint = " (already loaded)" if error == errno.EEXIST else ""
            raise ModuleSyscallError(f"loading module {name}: {_describe(error)}{hint}", error)
    finally:
        os.close(fd)


def unload_module(name: str, *, wait_seconds: float = 10.0) -> None:
    """Remove the module NAME, retrying while the kernel still holds a reference.

    After a livepatch is disabled or replaced the kernel frees it asynchronously,
    so the module stays busy for a short while; O_NONBLOCK makes that a retry
    here instead of a blocked call.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        result = _libc.syscall(SYS_DELETE_MODULE, name.encode(), os.O_NONBLOCK)
        if result == 0:
            return
        error = ctypes.get_errno()
        if error not in (errno.EAGAIN, errno.EBUSY) or time.monotonic() >= deadline:
            raise ModuleSyscallError(f"unloading module {name}: {_describe(error)}", error)
        time.sleep(0.05)
