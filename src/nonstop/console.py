"""Output helpers shared by the two command-line tools: JSON documents and error lines."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich Console made on first use: importing rich costs more than a quick command.

    Plain text (``markup=False``, strings only) is written directly: that is
    what rich would print for it here (no highlighting, no wrapping).
    """

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def print(self, *objects: Any, **options: Any) -> None:
        if options == {"markup": False} and all(isinstance(o, str) for o in objects):
            stream = sys.stderr if self._stderr else sys.stdout
            stream.write(" ".join(objects) + "\n")
            stream.flush()
            return
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        self._console.print(*objects, **options)


stdout = _LazyConsole(stderr=False)
stderr = _LazyConsole(stderr=True)


def emit_json(document: Any) -> None:
    """Write exactly one JSON document to stdout."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def fail(tool: str, message: str, code: int = 1) -> NoReturn:
    """Print ``TOOL: error: MESSAGE`` on stderr and exit with CODE (raises SystemExit)."""
    stderr.print(f"{tool}: error: {message}", markup=False)
    raise SystemExit(code)
