"""Hostile files for the agent's tests: made here, mapped by `nobody`, never by root."""

from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NOBODY = 65534
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
BOMB_TABLE = 0xFFFF * 0xFFFF
"""What the bomb's header claims: 65535 program headers of 65535 bytes (4 GiB)."""
_MAPPER = (
    "import mmap, sys\n"
    "f = open(sys.argv[1], 'rb')\n"
    "m = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


@contextmanager
def nobody_directory() -> Iterator[Path]:
    """A directory nobody owns and can reach (pytest's own tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="nonstop-nobody-"))
    path.chmod(0o755)
    os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def make_elf_bomb(path: Path) -> None:
    """A sparse ELF file whose program header table is as large as it claims (4 GiB of zeros)."""
    header = bytearray(64)
    header[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HHIQQQIHHHHHH", header, 16, 3, 62, 1, 0, 64, 0, 0, 64, 0xFFFF, 0xFFFF,
                     0, 0, 0)  # fmt: skip
    with path.open("wb") as handle:
        handle.write(header)
        handle.truncate(64 + BOMB_TABLE + 4096)
    os.chown(path, NOBODY, NOBODY)


@contextmanager
def mapped_by_nobody(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process running as nobody with the first page of PATH mapped (until the block ends)."""
    process = subprocess.Popen(
        [*SETPRIV, sys.executable, "-c", _MAPPER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready and process.stdout.readline().strip() == "ready"
        yield process
    finally:
        process.kill()
        process.wait()
