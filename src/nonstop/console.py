"""Output helpers shared by the two command-line tools: JSON documents and error lines."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from rich.console import Console

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(document: Any) -> None:
    """Write exactly one JSON document to stdout."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def fail(tool: str, message: str, code: int = 1) -> NoReturn:
    stderr.print(f"{tool}: error: {message}", markup=False)
    raise SystemExit(code)
