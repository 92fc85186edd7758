"""Files mapped by unprivileged users are hostile: a copy of the target with the same build-id
and other symbols must not steer what root patches elsewhere (issue 11, item 2)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from nonstop.userspace.elfmodel import parse_model

from .conftest import NONSTOPCTL, PARTIAL_LEVEL, FixtureBuild, nonstopctl
from .helpers import spec_for, whole_text_matches_file
from .hostile_files import NOBODY, make_elf_bomb, mapped_by_nobody, nobody_directory
from .test_engine import patched

pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not installed")
PEAK_RSS_LIMIT_KB = 150 * 1024
_MEASURED = (
    "import resource, subprocess, sys\n"
    "limit = 2 << 30  # the unfixed agent must fail, not eat the machine\n"
    "def cap(): resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "done = subprocess.run(sys.argv[1:], preexec_fn=cap, capture_output=True, text=True)\n"
    "sys.stdout.write(done.stdout)\n"
    "sys.stderr.write(done.stderr[-2000:])\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "raise SystemExit(done.returncode)\n"
)


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    with nobody_directory() as path:
        yield path


def point_symbol_elsewhere(library: Path, name: str, other: str) -> None:
    """Rewrite NAME's .dynsym entry (value and size) to OTHER's: plain byte writes."""
    with library.open("rb") as handle:
        dynsym = ELFFile(handle).get_section_by_name(".dynsym")
        assert isinstance(dynsym, SymbolTableSection)
        index = {sym.name: i for i, sym in enumerate(dynsym.iter_symbols())}
        target = dynsym.get_symbol(index[other])
        entry = dynsym["sh_offset"] + index[name] * dynsym["sh_entsize"]
    with library.open("r+b") as handle:
        handle.seek(entry + 8)
        handle.write(struct.pack("<QQ", target["st_value"], target["st_size"]))


def attacker_program(fixture_build: FixtureBuild, directory: Path) -> Path:
    """Copies of nsfix_prog and libnsfix (same build-id) in DIRECTORY, owned by nobody, for
    the test to rewrite: the program, run as nobody, loads the copy."""
    for path in (fixture_build.program, fixture_build.library):
        shutil.copy2(path, directory / path.name)
        os.chown(directory / path.name, NOBODY, NOBODY)
    return directory / fixture_build.program.name


def test_same_build_id_copy_steers_no_other_process(
    start_target, fixture_build, bundles, agent_env, nobody_dir
):
    program = attacker_program(fixture_build, nobody_dir)
    # The copy's nsfix_get names nsfix_kind's code.
    point_symbol_elsewhere(nobody_dir / fixture_build.library.name, "nsfix_get", "nsfix_kind")
    attacker = start_target(busy=1, sleepers=1, program=program, user=NOBODY)
    victim = start_target(busy=1, sleepers=1)
    assert attacker.pid < victim.pid  # the attacker's process is patched first
    later_victim = None
    for run in (1, 2):  # the second run reads what the first left in the on-disk cache
        if run == 2:
            later_victim = start_target(busy=1, sleepers=1)
        done = nonstopctl(
            agent_env, "--lib-update", "--bundle", str(bundles[PARTIAL_LEVEL]), "--json"
        )
        by_pid = {p["pid"]: p for p in json.loads(done.stdout)["processes"]}
        assert by_pid[attacker.pid]["result"] == "refused", by_pid[attacker.pid]
        assert "symbol map" in by_pid[attacker.pid]["reason"]
        assert whole_text_matches_file(attacker.pid, nobody_dir / fixture_build.library.name)
        for process in (victim, later_victim) if later_victim else (victim,):
            assert by_pid[process.pid]["result"] in ("patched", "already"), by_pid[process.pid]
            # nsfix_get carries the fix; nsfix_kind (which the copy named) is untouched.
            assert process.behaviour() == patched(PARTIAL_LEVEL)


def test_elf_bomb_mapped_by_nobody_costs_the_agent_no_memory(
    start_target, bundles, agent_env, nobody_dir
):
    bomb = nobody_dir / "bomb.so"
    make_elf_bomb(bomb)
    with mapped_by_nobody(bomb):
        victim = start_target(busy=1, sleepers=1)
        done = subprocess.run(
            [sys.executable, "-c", _MEASURED, *NONSTOPCTL, "--lib-update", "--bundle",
             str(bundles[1]), "--json"],
            env=agent_env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    print(f"nonstopctl --lib-update peak RSS with the bomb mapped: {peak_kb} kB")
    assert done.returncode == 0, done.stderr
    by_pid = {p["pid"]: p for p in json.loads(done.stdout)["processes"]}
    assert by_pid[victim.pid]["result"] == "patched"
    assert victim.behaviour() == patched(1)
    assert peak_kb < PEAK_RSS_LIMIT_KB


def test_same_build_id_copy_with_other_code_is_refused(
    start_target, fixture_build, bundles, trusted, engine, nobody_dir
):
    program = attacker_program(fixture_build, nobody_dir)
    copy = nobody_dir / fixture_build.library.name
    with copy.open("rb") as handle:
        (get,) = [s for s in parse_model(handle).defined("nsfix_get") if not s.hidden]
    with copy.open("r+b") as handle:  # the copy's nsfix_get ends in a nop instead of its ret
        handle.seek(get.value + get.size - 1)
        assert handle.read(1) == b"\xc3"
        handle.seek(-1, os.SEEK_CUR)
        handle.write(b"\x90")
    attacker = start_target(busy=1, sleepers=1, program=program, user=NOBODY)
    spec = spec_for(bundles[1], trusted)
    assert spec.expected_code["nsfix_get"]  # recorded by `nonstop bundle create`
    result = engine.apply(attacker.pid, spec)
    assert result.result == "refused", result
    assert "nsfix_get" in result.reason and "not the code the bundle was built for" in result.reason
    assert whole_text_matches_file(attacker.pid, copy)


# Run as nobody: a private read-only mapping of the device node in argv[1] (shown in
# /proc/PID/maps with the node's path and inode, like a mapped file).
_DEVICE_MAPPER = (
    "import mmap, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
    "m = mmap.mmap(fd, 4096, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)
IN_OPEN = 0x20


def _opens_of(path: Path) -> tuple[int, Callable[[], int]]:
    """An inotify watch for opens of PATH, and a function counting the events seen so far."""
    libc = ctypes.CDLL(None, use_errno=True)
    watch = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert watch >= 0 and libc.inotify_add_watch(watch, bytes(path), IN_OPEN) >= 0

    def count() -> int:
        seen = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                seen += len(os.read(watch, 4096)) // 16  # events carry no name here
        return seen

    return watch, count


def test_a_mapped_device_file_is_never_opened(
    start_target, bundles: dict[int, Path], agent_env: dict[str, str]
) -> None:
    """A device node mapped by nobody is looked at through O_PATH only: opening a device as
    root can have effects of its own (its driver's open), and it is no library anyway."""
    with nobody_directory() as directory:
        node = directory / "zero"
        os.mknod(node, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
        watch, opens = _opens_of(node)
        try:
            mapper = subprocess.Popen(
                ["/usr/bin/python3", "-I", "-c", _DEVICE_MAPPER, str(node)],  # nobody can run it
                user=NOBODY, group=NOBODY, extra_groups=[],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert mapper.stdout is not None and mapper.stdout.readline().strip() == "ready"
            assert opens() == 1  # the mapper's own open: the watch sees opens
            target = start_target(busy=0, sleepers=1)
            done = nonstopctl(agent_env, "--lib-update", "--bundle", str(bundles[1]))
            assert done.returncode == 0, done.stderr
            assert target.behaviour() == patched(1)
            assert opens() == 0
            mapper.kill()
            mapper.wait()
        finally:
            os.close(watch)
