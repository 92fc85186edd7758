"""The daemon meets hostile files: an ELF bomb mapped by nobody must not delay patching a new
root process (issue 11, item 4)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from nonstop.agent.new_processes import RESCAN_MIN_AGE
from tests.agent.conftest import Agent, level_of
from tests.agent.test_daemon import start_daemon  # noqa: F401  # fixture
from tests.userspace.hostile import make_elf_bomb, mapped_by_nobody, nobody_directory

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the daemon patches processes: root"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not installed"),
]
LATENCY_LIMIT = 1.0


def test_elf_bomb_does_not_delay_patching_a_new_process(
    agent: Agent,
    start_target,
    bundles: dict[int, Path],
    start_daemon,  # noqa: F811
) -> None:
    before = start_target(busy=0, sleepers=1)
    agent.json("--lib-update", "--bundle", str(bundles[1]))  # level 1 recorded for the daemon
    before.stop()
    agent.configure(daemon_rescan_seconds=3600)  # only the exec path catches new processes
    daemon = start_daemon()
    daemon.wait_for(r"running: 1 userspace target")
    with nobody_directory() as directory:
        bomb = directory / "bomb.so"
        make_elf_bomb(bomb)
        with mapped_by_nobody(bomb):
            time.sleep(RESCAN_MIN_AGE + 0.2)  # old enough for the rescan to read its maps
            daemon.process.send_signal(signal.SIGHUP)  # a rescan starts right after the reload
            daemon.wait_for("configuration reloaded")
            exec_time = time.monotonic()  # taken before the fork: the latency is over-stated
            target = start_target(busy=1, sleepers=1)
            while level_of(target) != "1000" and time.monotonic() < exec_time + 30:
                assert daemon.process.poll() is None, daemon.log()
                time.sleep(0.01)
            latency = time.monotonic() - exec_time
    print(f"exec to patched with a bomb mapped by nobody: {latency * 1000:.0f} ms")
    assert latency < LATENCY_LIMIT, daemon.log()
    assert daemon.stop() == 0
