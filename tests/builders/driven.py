"""Driver programs the builder tests run on an exact library, to ask it questions before and
after a bundle is applied."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class Driven:
    """A driver program on one exact library (LD_LIBRARY_PATH): one command in, one line out."""

    def __init__(self, program: Path, library: Path) -> None:
        self.process = subprocess.Popen(
            [str(program)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "LD_LIBRARY_PATH": str(library.parent)},
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        ready = self.stdout.readline().split()
        assert ready and ready[0] == "ready", ready
        self.pid = self.process.pid

    def ask(self, command: str) -> str:
        self.stdin.write(command + "\n")
        self.stdin.flush()
        return self.stdout.readline().strip()

    def answers(self, commands: list[str]) -> list[str]:
        return [self.ask(command) for command in commands]

    def maps(self, library: Path) -> bool:
        """Whether the process maps LIBRARY (the exact file, not another copy)."""
        return str(library) in Path(f"/proc/{self.pid}/maps").read_text()
