"""The agent's local state: small JSON documents in the state dir, written atomically.

Each area keeps its own document (``kernel.json``, ``userspace.json``, ...).
A write goes to a temporary file that is fsynced and renamed over the old one,
so a crash at any instant leaves either the old or the new document, never a
torn one. Files are mode 0600: they may hold a host token.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class StateError(Exception):
    """A state document is unreadable or the state dir cannot be written."""


class StateStore:
    """The agent's JSON documents in one state directory (created 0700 on first write or lock)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def read(self, name: str) -> dict[str, Any]:
        """The document NAME, or an empty dict when it was never written."""
        try:
            document = json.loads(self.path(name).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(f"state file {self.path(name)} is unreadable: {exc}") from None
        if not isinstance(document, dict):
            raise StateError(f"state file {self.path(name)} does not hold a JSON object")
        return document

    def write(self, name: str, document: dict[str, Any]) -> None:
        """Replace document NAME atomically and durably (file and directory fsynced), or StateError.

        Not a lock: callers that read, change and write hold ``locked(NAME)`` around it.
        """
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = self.path(name)
            temporary = target.with_suffix(f".tmp.{os.getpid()}")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
            directory = os.open(self.state_dir, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            raise StateError(f"cannot write state in {self.state_dir}: {exc.strerror}") from None

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Exclusive lock on NAME across agent processes (blocks until free)."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.state_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
