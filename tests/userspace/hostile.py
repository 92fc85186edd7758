"""Hostile target processes run as user nobody: built and started the same way for the engine's
and the daemon's tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.userspace.conftest import FIXTURES, FixtureBuild

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture(scope="session")
def public_dir() -> Iterator[Path]:
    """A directory user nobody can read and execute from (pytest's own are root-only)."""
    directory = Path(tempfile.mkdtemp(prefix="nonstop-hostile-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def fd_swapper(public_dir: Path, public_library: Path) -> Path:
    """fd_swapper.c linked to the copy of libnsfix that nobody can map."""
    library = public_library
    program = public_dir / "fd_swapper"
    subprocess.run(
        ["gcc", "-O2", "-pthread", f"-I{FIXTURES}", "-o", str(program),
         str(FIXTURES / "fd_swapper.c"), str(library), "-Wl,-rpath,$ORIGIN"],
        check=True,
    )  # fmt: skip
    program.chmod(0o755)
    return program


def start_as_nobody(argv: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[str]:
    """ARGV as user nobody; inherited PASS_FDS stay open across setpriv."""
    return subprocess.Popen(
        [*NOBODY, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        pass_fds=pass_fds,
        cwd="/",
    )


def root_secret(directory: Path) -> Path:
    """A root-owned 0600 file with known content."""
    path = directory / "root-only.conf"
    path.write_bytes(b"root secret: never to be overwritten\n" * 4)
    path.chmod(0o600)
    os.chown(path, 0, 0)
    return path


def ask(process: subprocess.Popen[str], command: str) -> str:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(command + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


@pytest.fixture(scope="session")
def public_library(public_dir: Path, fixture_build: FixtureBuild) -> Path:
    """libnsfix where nobody can map it (the same file: the same build-id)."""
    library = public_dir / "libnsfix.so.1"
    if not library.exists():
        shutil.copyfile(fixture_build.library, library)
        library.chmod(0o644)
    return library


# Run by Debian's python3 as nobody: maps libnsfix, then one memfd per header given on stdin
# (a JSON list of [memfd name, header hex]), each as a shared read-only mapping.
FORGER = """
import ctypes, json, mmap, os, sys
ctypes.CDLL(sys.argv[1])
keep = []
for name, blob in json.loads(sys.stdin.readline()):
    data = bytes.fromhex(blob)
    size = max(8192, (len(data) + 4095) // 4096 * 4096)
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data.ljust(size, b"\\0"))
    keep.append(mmap.mmap(fd, size, prot=mmap.PROT_READ))
    os.close(fd)
print("ready", len(keep), flush=True)
sys.stdin.readline()
"""

# Run by Debian's python3 as nobody: maps libnsfix, then every file of a directory (shared,
# read-only: mmap needs no valid ELF file, and /proc/PID/maps shows each one).
MAPPER = """
import ctypes, mmap, os, sys
ctypes.CDLL(sys.argv[1])
keep = []
for name in sorted(os.listdir(sys.argv[2])):
    fd = os.open(os.path.join(sys.argv[2], name), os.O_RDONLY)
    try:
        keep.append(mmap.mmap(fd, 0, prot=mmap.PROT_READ))
    except (OSError, ValueError):
        pass
    os.close(fd)
print("ready", len(keep), flush=True)
sys.stdin.readline()
"""


def start_python_as_nobody(script: str, *args: str, stdin_line: str = "") -> subprocess.Popen[str]:
    """SCRIPT run by Debian's python3 as nobody; waits for its "ready" line."""
    process = start_as_nobody(["/usr/bin/python3", "-I", "-c", script, *args])
    assert process.stdin is not None and process.stdout is not None
    if stdin_line:
        process.stdin.write(stdin_line + "\n")
        process.stdin.flush()
    ready = process.stdout.readline()
    assert ready.startswith("ready"), ready
    return process
