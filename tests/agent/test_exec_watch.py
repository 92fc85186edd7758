"""Exec events from the real proc connector."""

from __future__ import annotations

import os
import struct
import subprocess
import time

import pytest

from nonstop.agent.exec_watch import ExecWatcher, parse_exec_events

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the proc connector needs root (CAP_NET_ADMIN)"
)


def test_exec_of_a_new_process_is_reported_quickly():
    with ExecWatcher() as watcher:
        started = time.monotonic()
        child = subprocess.Popen(["/bin/sleep", "0.2"])
        seen: list[int] = []
        while child.pid not in seen and time.monotonic() - started < 5:
            seen.extend(watcher.wait(timeout=1.0))
        child.wait()
    assert child.pid in seen


def datagram(what: int, pid: int, tgid: int) -> bytes:
    event = struct.pack("=IIQII", what, 0, 0, pid, tgid)
    connector = struct.pack("=IIIIHH", 1, 1, 0, 0, len(event), 0)
    return struct.pack("=IHHII", 16 + len(connector) + len(event), 3, 0, 0, 0) + connector + event


def test_parser_keeps_only_exec_events_by_tgid():
    fork = datagram(0x1, 10, 10)
    execs = datagram(0x2, 12, 11)
    assert parse_exec_events(fork + execs) == [11]
    assert parse_exec_events(execs[:-4]) == []
    assert parse_exec_events(b"") == []
