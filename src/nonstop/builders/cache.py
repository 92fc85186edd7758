"""What every builder shares: its download cache outside any checkout, and running tools.

``cache_dir(kind)`` is ``$NONSTOP_<KIND>_CACHE``, else ``nonstop/<kind>`` in
``$XDG_CACHE_HOME`` or ``~/.cache``: a fresh clone (CI's) reuses what an
earlier run fetched. ``locked`` lets one builder at a time fill a cache dir,
so concurrent builds never see an entry half-written. ``run_tool`` runs apt,
dpkg and friends, turning a failure into one line.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nonstop.builders.errors import BuilderError


def cache_dir(kind: str) -> Path:
    """The cache dir of KIND (``kernel``, ``debian``, ...); see the module docstring."""
    explicit = os.environ.get(f"NONSTOP_{kind.upper()}_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nonstop" / kind


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold DIRECTORY's lock (created with it) for the block: one filler at a time."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run_tool(
    argv: list[str],
    cwd: Path | None = None,
    *,
    error: type[BuilderError] = BuilderError,
    hint: str = "",
) -> str:
    """ARGV's stdout. On failure ERROR names the command and its first ``E:`` line (apt's
    errors), else its last line, followed by HINT."""
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise error(f"cannot run {argv[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        errors = [line for line in lines if line.startswith("E: ")]
        detail = errors[0] if errors else lines[-1]
        raise error(f"{' '.join(argv)} failed: {detail}{f' ({hint})' if hint else ''}")
    return done.stdout
