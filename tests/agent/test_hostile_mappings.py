"""A process (user nobody) mapping 3,000 damaged ELF files beside the real library: every
per-process step of the agent (--lib-info, the check-in inventory, the daemon's patch step)
goes on, and a healthy process running alongside is reported and patched correctly.

The files are mutations of libnsfix, each given a build-id of its own so that each counts
as another library (read, parsed for its soname, offered to the package manager)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonstop.agent import lib_levels
from nonstop.agent.config import Blocklist
from nonstop.agent.inventory import LibraryFacts, libraries_in_use, library_report
from nonstop.agent.new_processes import mapped_files, readable_maps
from nonstop.userspace import Engine, EngineOptions
from tests.agent.conftest import Agent, nsfix_build_id
from tests.userspace.helpers import spec_for
from tests.userspace.hostile import MAPPER, public_dir, public_library, start_python_as_nobody
from tests.userspace.region_forgery import library_build_id

__all__ = ["public_dir", "public_library"]  # fixtures
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reading other processes: root")
MUTANTS = 3000
SEED = 20261205
ELF_FIELDS = [(24, 8), (32, 8), (40, 8), (52, 2), (54, 2), (56, 2), (58, 2), (60, 2), (62, 2)]
"""e_entry, e_phoff, e_shoff, e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx."""


def extreme(rng: random.Random, size: int) -> bytes:
    value = rng.choice([0, 1, 0x7F, 0x80, (1 << (8 * size - 1)), (1 << (8 * size)) - 1,
                        rng.getrandbits(8 * size)])  # fmt: skip
    return value.to_bytes(size, "little")


def mutate(original: bytes, build_id: bytes, index: int, rng: random.Random) -> bytes:
    """One deterministic mutation, with a build-id of its own."""
    data = bytearray(original)
    where = data.find(build_id)
    data[where : where + len(build_id)] = hashlib.sha1(b"mutant %d" % index).digest()
    shoff, phoff = struct.unpack_from("<Q", data, 40)[0], struct.unpack_from("<Q", data, 32)[0]
    kind = index % 5
    if kind == 0:  # bit flips anywhere
        for _ in range(rng.randint(1, 32)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del data[rng.randrange(16, len(data)) :]
    elif kind == 2:  # an ELF header field
        offset, size = rng.choice(ELF_FIELDS)
        data[offset : offset + size] = extreme(rng, size)
    elif kind == 3:  # a section header field (sh_name .. sh_entsize)
        count = struct.unpack_from("<H", data, 60)[0]
        entry = shoff + 64 * rng.randrange(count) + rng.choice([0, 4, 8, 16, 24, 32, 40, 44, 56])
        size = 4 if entry % 8 == 4 or (entry - shoff) % 64 in (0, 40, 44) else 8
        data[entry : entry + size] = extreme(rng, size)
    else:  # a program header field (p_type .. p_align)
        count = struct.unpack_from("<H", data, 56)[0]
        entry = phoff + 56 * rng.randrange(count) + rng.choice([0, 4, 8, 16, 24, 32, 40, 48])
        size = 4 if (entry - phoff) % 56 in (0, 4) else 8
        data[entry : entry + size] = extreme(rng, size)
    return bytes(data)


@pytest.fixture(scope="module")
def mutants(public_dir: Path, public_library: Path) -> Path:
    directory = public_dir / "mutants"
    directory.mkdir(exist_ok=True)
    original = public_library.read_bytes()
    build_id = bytes.fromhex(library_build_id(public_library))
    rng = random.Random(SEED)
    for index in range(MUTANTS):
        (directory / f"m{index:04d}.so").write_bytes(mutate(original, build_id, index, rng))
    os.chmod(directory, 0o755)
    return directory


@pytest.fixture
def mapper(mutants: Path, public_library: Path) -> Iterator[subprocess.Popen[str]]:
    process = start_python_as_nobody(MAPPER, str(public_library), str(mutants))
    yield process
    process.kill()
    process.wait()


def test_thousands_of_damaged_libraries_stop_no_step_of_the_agent(
    mapper: subprocess.Popen[str],
    mutants: Path,
    start_target,
    fixture_build,
    bundles: dict[int, Path],
    trusted,
    agent: Agent,
    tmp_path: Path,
) -> None:
    healthy = start_target(busy=1, sleepers=1)
    target_id = nsfix_build_id(fixture_build)
    maps = Path(f"/proc/{mapper.pid}/maps").read_text()
    assert maps.count(str(mutants)) >= MUTANTS * 0.99  # (a few are empty: no mapping)

    # --lib-info of the mapper: nothing there, nothing failed.
    done = agent.run("--lib-info", "--json", "--pid", str(mapper.pid), "--pid", str(healthy.pid))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout) == {"processes": [], "foreign": []}

    # The check-in inventory: every process scanned, every damaged file read and parsed.
    engine = Engine(EngineOptions(lock_dir=tmp_path / "locks", cache_dir=tmp_path / "elf"))
    uses = libraries_in_use(engine, Blocklist((), ()))
    assert {healthy.pid, mapper.pid} <= uses[target_id].pids
    assert sum(mapper.pid in use.pids for use in uses.values()) > MUTANTS / 2
    report = library_report(uses, LibraryFacts(tmp_path / "cache"))
    (entry,) = [r for r in report if r["build_id"] == target_id]
    assert entry["soname"] == "libnsfix.so.1" and entry["applied_level"] is None

    # The daemon's per-process step: its view of the new process, then the patch itself.
    files = mapped_files(mapper.pid, readable_maps(mapper.pid) or [], engine.build_ids)
    assert [f.build_id for f in files].count(target_id) == 1
    spec = spec_for(bundles[1], trusted)
    results = lib_levels.apply_to_processes(
        engine, spec, Blocklist((), ()), [mapper.pid, healthy.pid]
    )
    assert [r.result for r in results] == ["patched", "patched"], [r.reason for r in results]
    assert healthy.ask("version") == "1000"  # level 1's answer
    uses = libraries_in_use(engine, Blocklist((), ()))
    assert uses[target_id].levels[healthy.pid] == uses[target_id].levels[mapper.pid] == 1
    assert mapper.poll() is None
