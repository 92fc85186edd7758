"""ELF files whose headers lie: modelling one costs bounded memory and time, or is refused.

Each file is the fixture library with one table rewritten (plain byte writes at offsets
pyelftools located), made as large as it claims with a sparse tail. Each is modelled in a
child process under a 1 GiB address-space cap and a time limit, as the root agent would
model a file that an unprivileged user maps."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from .conftest import FixtureBuild

SPARSE_SIZE = 900 << 20
"""Under the 1 GiB file limit, and beyond what the child may allocate."""
_MODEL = (
    "import resource, sys\n"
    "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
    "from nonstop.userspace.elfmodel import parse_model\n"
    "try:\n"
    "    with open(sys.argv[1], 'rb') as handle:\n"
    "        print('model', parse_model(handle).build_id)\n"
    "except Exception as exc:\n"
    "    print('refused', type(exc).__name__, exc)\n"
)


def section_header(path: Path, name: str) -> tuple[int, int]:
    """(file offset of NAME's section header, of its data)."""
    with path.open("rb") as handle:
        elf = ELFFile(handle)
        index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == name)
        return elf["e_shoff"] + index * elf["e_shentsize"], elf.get_section(index)["sh_offset"]


def poke(path: Path, offset: int, fmt: str, *values: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(struct.pack(fmt, *values))


def huge_symbol_table(path: Path) -> None:
    """.dynsym claims 30 million symbols, all really in the (sparse) file."""
    header, _ = section_header(path, ".dynsym")
    poke(path, header + 24, "<QQ", 1 << 20, 30_000_000 * 24)
    with path.open("r+b") as handle:
        handle.truncate((1 << 20) + 30_000_000 * 24)


def looping_version_chain(path: Path) -> None:
    """.gnu.version_r claims 4 billion entries; its last entry's next offset is 0 (a loop)."""
    header, _ = section_header(path, ".gnu.version_r")
    poke(path, header + 44, "<I", 0xFFFFFFFF)


def huge_build_id_note(path: Path) -> None:
    """The build-id note claims a descriptor of 800 MiB, all really in the (sparse) file."""
    _, data = section_header(path, ".note.gnu.build-id")
    poke(path, data + 4, "<I", 800 << 20)
    with path.open("r+b") as handle:
        handle.truncate(SPARSE_SIZE)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (huge_symbol_table, "refused ElfBoundsError"),
        (looping_version_chain, "refused ElfBoundsError"),
        (huge_build_id_note, "model "),  # the real build-id is still read, and nothing more
    ],
)
def test_lying_tables_cost_bounded_memory_and_time(
    fixture_build: FixtureBuild, tmp_path: Path, mutate: Callable[[Path], None], expected: str
) -> None:
    copy = tmp_path / "libnsfix.so.1"
    shutil.copyfile(fixture_build.library, copy)
    mutate(copy)
    done = subprocess.run(
        [sys.executable, "-c", _MODEL, str(copy)], capture_output=True, text=True, timeout=30
    )
    assert done.stdout.startswith(expected), (done.stdout, done.stderr[-2000:])
