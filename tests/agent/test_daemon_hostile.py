"""`nonstopctl --daemon` among hostile processes run by nobody: one that forged patch memory
(it used to kill the daemon at every start), one that maps 3,000 damaged libraries, and one
that swaps the patch memfd for a root-only file. The daemon refuses or patches each in one
log line, writes no root file, and goes on patching new processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent.conftest import Agent, level_of
from tests.agent.test_daemon import DaemonProcess, start_daemon, wait_level
from tests.agent.test_hostile_mappings import mapper, mutants
from tests.userspace.hostile import (
    FORGER,
    fd_swapper,
    public_dir,
    public_library,
    root_secret,
    start_as_nobody,
    start_python_as_nobody,
)
from tests.userspace.region_forgery import forged_headers, forger_line, library_build_id

__all__ = ["fd_swapper", "mapper", "mutants", "public_dir", "public_library", "start_daemon"]
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the daemon patches processes (ptrace): root"
)
SWAPPERS = 1


@pytest.fixture
def hostile(
    fd_swapper: Path, public_library: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], list[subprocess.Popen[str]], Path]]:
    """A forger and SWAPPERS fd swappers, all holding an O_PATH fd of one root-only file."""
    secret = root_secret(tmp_path)
    fd = os.open(secret, os.O_PATH | os.O_CLOEXEC)
    try:
        swappers = [
            start_as_nobody([str(fd_swapper), str(fd)], pass_fds=(fd,)) for _ in range(SWAPPERS)
        ]
    finally:
        os.close(fd)
    for process in swappers:
        assert process.stdout is not None and process.stdout.readline().startswith("ready")
    shapes = forged_headers(library_build_id(public_library))
    line = forger_line(public_library, list(shapes.values()))
    forger = start_python_as_nobody(FORGER, str(public_library), stdin_line=line)
    yield forger, swappers, secret
    for process in [forger, *swappers]:
        process.kill()
        process.wait()


def test_the_daemon_survives_forged_memory_and_fd_swaps(
    agent: Agent,
    start_target,
    bundles: dict[int, Path],
    start_daemon: Callable[[], DaemonProcess],
    hostile: tuple[subprocess.Popen[str], list[subprocess.Popen[str]], Path],
    mapper: subprocess.Popen[str],
) -> None:
    forger, swappers, secret = hostile
    before = secret.read_bytes()
    recorded = start_target(busy=0, sleepers=1)  # records level 1 without touching the others
    agent.json("--lib-update", "--bundle", str(bundles[1]), "--pid", str(recorded.pid))
    time.sleep(1.1)  # older than the rescan's minimum age: the start's rescan takes them

    daemon = start_daemon()
    daemon.wait_for(r"running: 1 userspace target", timeout=120)
    forged = daemon.wait_for(rf"pid {forger.pid} \(.*\): libnsfix\.so\.1 level 1 (\w+)")
    assert forged.group(1) == "patched"  # its forged memory is ignored, its library patched
    damaged = daemon.wait_for(rf"pid {mapper.pid} \(.*\): libnsfix\.so\.1 level 1 (\w+)")
    assert damaged.group(1) == "patched"  # 3,000 damaged libraries beside it change nothing
    outcomes = []
    for process in swappers:
        found = daemon.wait_for(rf"pid {process.pid} \(.*\): libnsfix\.so\.1 level 1 (\w+)(.*)")
        outcomes.append(found.group(1))
        if found.group(1) == "refused":
            assert "replaced by another file inside the target" in found.group(2)
        else:  # this attacker lost the race
            assert found.group(1) == "patched", found.group(0)
    assert secret.read_bytes() == before
    print(f"swappers: {outcomes}")

    # Still at work: a new process is patched after its exec, the forger left as it is.
    late = start_target(busy=0, sleepers=1)
    wait_level(late, "1000")
    assert level_of(recorded) == "1000"
    assert daemon.stop() == 0
    log = daemon.log()
    assert "Traceback" not in log and log.rstrip().endswith("stopped")
    assert all(p.poll() is None for p in [forger, mapper, *swappers])
