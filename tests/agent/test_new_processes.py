"""When a freshly exec'd process may be patched: ld.so's RELRO protection as the signal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nonstop.agent.new_processes import (
    WATCH_SECONDS,
    NewProcessQueue,
    mapped_files,
    read_relro,
    relocated,
)
from nonstop.userspace.image import BuildIdCache
from nonstop.userspace.procfs import read_maps
from tests.agent.conftest import nsfix_build_id


def test_relro_range_of_hardened_and_unhardened_files(fixture_build, tmp_path: Path) -> None:
    relro = read_relro(fixture_build.library)
    assert relro is not None and relro.start < relro.end
    assert relro.start % 4096 == 0 and relro.end % 4096 == 0
    source = tmp_path / "plain.c"
    source.write_text("int plain(void) { return 1; }\n")
    plain = tmp_path / "libplain.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-z,norelro", "-o", str(plain), str(source)], check=True
    )
    assert read_relro(plain) is None  # no signal: left to the rescan
    assert read_relro(source) is None  # not an ELF file
    assert read_relro(tmp_path / "absent") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="reading map_files of another process: root")
def test_a_started_program_shows_its_libraries_relocated(start_target, fixture_build) -> None:
    target = start_target(busy=0, sleepers=1)  # answered "ready": main() runs
    files = mapped_files(target.pid, read_maps(target.pid), BuildIdCache())
    (library,) = [f for f in files if f.build_id == nsfix_build_id(fixture_build)]
    assert relocated(library, read_relro(library.opener)) is True
    (program,) = [f for f in files if f.mappings[0].path == str(fixture_build.program)]
    assert relocated(program, read_relro(program.opener)) is True


def test_relocated_is_false_while_the_relro_range_is_writable(fixture_build) -> None:
    from nonstop.agent.new_processes import MappedFile
    from nonstop.userspace.procfs import Mapping

    relro = read_relro(fixture_build.library)
    assert relro is not None
    base = 0x7F0000000000
    text = Mapping(base, base + relro.start, "r-xp", 0, "08:01", 7, "/lib/libx.so")
    data = Mapping(base + relro.start, base + relro.end + 4096, "rw-p", relro.start, "08:01", 7,
                   "/lib/libx.so")  # fmt: skip
    loaded = MappedFile("ab", [text, data], fixture_build.library)
    assert relocated(loaded, relro) is False  # mapped, not yet protected by ld.so
    protected = Mapping(base + relro.start, base + relro.end, "r--p", relro.start, "08:01", 7,
                        "/lib/libx.so")  # fmt: skip
    rest = Mapping(base + relro.end, base + relro.end + 4096, "rw-p", relro.end, "08:01", 7,
                   "/lib/libx.so")  # fmt: skip
    assert relocated(MappedFile("ab", [text, protected, rest], fixture_build.library), relro)
    assert relocated(MappedFile("ab", [text], fixture_build.library), relro) is False
    assert relocated(loaded, None) is None


def test_queue_backs_off_and_lets_go_after_its_window() -> None:
    queue = NewProcessQueue()
    queue.add(os.getpid(), now=100.0)
    (item,) = queue.due(100.0)
    delays = []
    now = 100.0
    while len(queue):
        queue.later(item, now)
        if not len(queue):
            break
        delays.append(item.next_check - now)
        now = item.next_check
        assert queue.due(now) == [item]
    assert delays[:3] == pytest.approx([0.002, 0.004, 0.008])
    assert max(delays) == pytest.approx(0.05)
    assert WATCH_SECONDS <= now - 100.0 <= WATCH_SECONDS + 0.05
    queue.add(999_999_999, now=0.0)  # no such process: never queued
    assert len(queue) == 0
