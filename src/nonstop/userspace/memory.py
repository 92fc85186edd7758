"""Reading and writing another process's memory through /proc/PID/mem.

Writes go through /proc/PID/mem because it can write read-only and
read-execute pages (the kernel breaks copy-on-write), which lets patch code
stay R-X in the target and never be writable and executable at once.
"""

from __future__ import annotations

import os
import struct

from nonstop.userspace.errors import ProcessGoneError


class ProcessMemory:
    """An open /proc/PID/mem: reads and writes at process addresses, whatever the page
    protections. Needs ptrace access to PID (root), not stopped threads; ProcessGoneError
    when PID is gone at open."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self._fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessGoneError(f"process {pid} is gone") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ProcessMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _failed(self, exc: OSError, what: str) -> Exception:
        if not os.path.exists(f"/proc/{self.pid}"):
            return ProcessGoneError(f"process {self.pid} is gone")
        return OSError(exc.errno, what)

    def read(self, address: int, size: int) -> bytes:
        """Exactly SIZE bytes at ADDRESS. ProcessGoneError when the process is gone or fewer
        bytes come back (also when the range runs into an unmapped page); OSError when the
        first page cannot be read and the process still exists."""
        try:
            data = os.pread(self._fd, size, address)
        except OSError as exc:
            raise self._failed(exc, f"cannot read {size} bytes at {address:#x}") from None
        if len(data) != size:
            raise ProcessGoneError(f"short read at {address:#x} in process {self.pid}")
        return data

    def read_u64(self, address: int) -> int:
        value: int = struct.unpack("<Q", self.read(address, 8))[0]
        return value

    def write(self, address: int, data: bytes) -> None:
        """Write all of DATA at ADDRESS, read-only and R-X pages included (a page of a file
        mapping becomes a private copy and stays so). Errors as for :meth:`read`."""
        try:
            written = os.pwrite(self._fd, data, address)
        except OSError as exc:
            raise self._failed(exc, f"cannot write {len(data)} bytes at {address:#x}") from None
        if written != len(data):
            raise ProcessGoneError(f"short write at {address:#x} in process {self.pid}")
