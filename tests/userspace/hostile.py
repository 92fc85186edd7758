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
def fd_swapper(public_dir: Path, fixture_build: FixtureBuild) -> Path:
    """fd_swapper.c linked to a copy of libnsfix (same file, same build-id) nobody can map."""
    library = public_dir / "libnsfix.so.1"
    shutil.copyfile(fixture_build.library, library)
    library.chmod(0o644)
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
