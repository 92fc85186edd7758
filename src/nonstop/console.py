"""Output helpers shared by the two command-line tools: JSON documents and error lines.

Text lines often carry names that another user chose (an executable's path,
a mapped file's name): every text line goes through ``printable``, so that no
such name can send terminal escape sequences to root's terminal or hide text.
JSON output escapes control characters by itself.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from rich.console import Console

# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a
# terminal shows; newline and tab are kept (multi-line messages, tables).
_UNPRINTABLE = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (
        *range(0x20),
        0x7F,
        *range(0x80, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    )
    if chr(code) not in "\n\t"
}


def printable(text: str) -> str:
    """TEXT with control characters shown as escapes (``\\x1b``), newlines and tabs kept."""
    return text.translate(_UNPRINTABLE)


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
            stream.write(printable(" ".join(objects)) + "\n")
            stream.flush()
            return
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        self._console.print(
            *(printable(o) if isinstance(o, str) else o for o in objects), **options
        )


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
