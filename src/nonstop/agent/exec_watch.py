"""Exec notifications from the kernel's process-events connector (netlink).

A process started after a library was patched maps the unpatched file, so the
daemon wants to hear about every exec at once. The proc connector delivers a
PROC_EVENT_EXEC per exec to a root listener. When the connector is unavailable
or its buffer overflowed, the caller falls back to rescanning /proc.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from types import TracebackType

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_EXEC = 0x00000002
NLMSG_DONE = 3

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_PROC_EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_EXEC_EVENT = struct.Struct("=II")  # process_pid, process_tgid


class ExecWatchUnavailable(Exception):
    """The proc connector cannot be used here (not root, or no CONFIG_PROC_EVENTS)."""


class EventsLost(Exception):
    """The kernel dropped events (socket buffer overflow): rescan to catch up."""


class ExecWatcher:
    """A netlink socket subscribed to the kernel's exec events (root only).

    Creating one raises ExecWatchUnavailable when the connector cannot be used.
    """

    def __init__(self) -> None:
        try:
            self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError as exc:
            raise ExecWatchUnavailable(f"no proc connector: {exc.strerror}") from None
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._socket.bind((0, CN_IDX_PROC))
            operation = struct.pack("=I", PROC_CN_MCAST_LISTEN)
            connector = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(operation), 0)
            header = _NLMSGHDR.pack(
                _NLMSGHDR.size + len(connector) + len(operation), NLMSG_DONE, 0, 0, os.getpid()
            )
            self._socket.send(header + connector + operation)
        except OSError as exc:
            self._socket.close()
            raise ExecWatchUnavailable(f"cannot subscribe to exec events: {exc.strerror}") from None

    def fileno(self) -> int:
        """The socket's fd, readable when events are waiting (for the caller's own select)."""
        return self._socket.fileno()

    def wait(self, timeout: float) -> list[int]:
        """Thread-group ids that called exec, waiting up to TIMEOUT seconds for the first."""
        ready, _, _ = select.select([self._socket], [], [], timeout)
        pids: list[int] = []
        while ready:
            try:
                data = self._socket.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise EventsLost("exec events were dropped by the kernel") from None
                raise
            pids.extend(parse_exec_events(data))
        return pids

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> ExecWatcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def parse_exec_events(data: bytes) -> list[int]:
    """The tgids of the PROC_EVENT_EXEC events in one netlink datagram."""
    pids: list[int] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length = _NLMSGHDR.unpack_from(data, offset)[0]
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        event = offset + _NLMSGHDR.size + _CN_MSG.size
        if event + _PROC_EVENT.size + _EXEC_EVENT.size <= offset + length:
            what = _PROC_EVENT.unpack_from(data, event)[0]
            if what == PROC_EVENT_EXEC:
                pids.append(_EXEC_EVENT.unpack_from(data, event + _PROC_EVENT.size)[1])
        offset += (length + 3) & ~3
    return pids
