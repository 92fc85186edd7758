"""The agent meets hostile files mapped by nobody: an ELF bomb must not delay the daemon's
patching of a new root process (issue 11, item 4), and a same-build-id copy must not tell the
agent when a root process has finished starting (item 2)."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from nonstop.agent.new_processes import RESCAN_MIN_AGE
from tests.agent.conftest import Agent, level_of
from tests.agent.test_daemon import slow_loader, start_daemon, start_slow  # noqa: F401
from tests.userspace.conftest import FixtureBuild
from tests.userspace.hostile_files import NOBODY, make_elf_bomb, mapped_by_nobody, nobody_directory
from tests.userspace.test_hostile_files import attacker_program

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
    agent.configure(auto_update=False, daemon_rescan_seconds=3600)  # only the exec path acts
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


def claim_relocated_from_the_start(path: Path) -> None:
    """Point PATH's PT_GNU_RELRO at its first page, read-only from the moment it is mapped."""
    with path.open("rb") as handle:
        elf = ELFFile(handle)
        index = next(
            i for i, seg in enumerate(elf.iter_segments()) if seg["p_type"] == "PT_GNU_RELRO"
        )
        header = elf["e_phoff"] + index * elf["e_phentsize"]
    with path.open("r+b") as handle:
        handle.seek(header + 8)  # p_offset, p_vaddr, p_paddr, p_filesz, p_memsz
        handle.write(struct.pack("<QQQQQ", 0, 0, 0, 0x1000, 0x1000))


def test_a_copy_claiming_early_relocation_does_not_hurry_root_processes(
    agent: Agent,
    start_target,
    bundles: dict[int, Path],
    fixture_build: FixtureBuild,
    slow_loader: Path,  # noqa: F811
) -> None:
    with nobody_directory() as directory:
        program = attacker_program(fixture_build, directory)
        for name in (fixture_build.program.name, fixture_build.library.name):
            claim_relocated_from_the_start(directory / name)
        attacker = start_target(busy=0, sleepers=1, program=program, user=NOBODY)
        starting = start_slow(fixture_build.program, slow_loader, 3000)
        try:
            time.sleep(0.4)  # libnsfix is mapped now, not relocated
            assert "libnsfix.so.1" in Path(f"/proc/{starting.pid}/maps").read_text()
            assert attacker.pid < starting.pid  # the copies' headers are read first
            document = agent.json("--lib-update", "--bundle", str(bundles[1]), expect=None)
            entry = next(p for p in document["processes"] if p["pid"] == starting.pid)
            assert entry["result"] == "busy" and "still starting" in entry["reason"], entry
            assert "/memfd:nonstop:" not in Path(f"/proc/{starting.pid}/maps").read_text()
        finally:
            starting.kill()
            starting.wait()
