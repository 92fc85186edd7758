"""One patcher per process: an flock named after the process (PID and start time).

The lock is a file under a runtime directory; the kernel drops it when its
holder dies, even by SIGKILL, so a killed patcher never blocks the next run.
The holder unlinks the file before releasing it; a waiter that wins a lock
on an unlinked file notices (inode changed) and tries again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from nonstop.userspace.errors import BusyError
from nonstop.userspace.procfs import start_time

DEFAULT_LOCK_DIR = Path("/run/nonstop/locks")


@contextlib.contextmanager
def process_lock(pid: int, directory: Path, wait: float = 2.0) -> Iterator[None]:
    """Hold the lock of process PID; BusyError if another patcher keeps it beyond WAIT seconds."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{pid}-{start_time(pid)}.lock"
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() > deadline:
                raise BusyError(f"another patcher is working on process {pid}") from None
            time.sleep(0.01)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
