"""Reading C source around a declaration: a function's text, and how lines moved.

Used for reporting and for one normalisation: telling a function whose code
changed only because ``__LINE__`` (``assert``) moved apart from a real change.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path


def read_lines(path: Path) -> tuple[str, ...] | None:
    """The lines of PATH, or None if it is unreadable.

    Cached by path, size and modification time, so that a build tree reused
    within one process (a second build in the same ``--work``) is read afresh.
    """
    try:
        status = path.stat()
    except OSError:
        return None
    return _read_lines(path, status.st_size, status.st_mtime_ns)


@lru_cache(maxsize=256)
def _read_lines(path: Path, size: int, mtime_ns: int) -> tuple[str, ...] | None:
    try:
        return tuple(path.read_text(errors="replace").splitlines())
    except OSError:
        return None


def function_text(path: Path, line: int) -> str | None:
    """The text of the function declared at LINE (1-based): up to its closing brace."""
    lines = read_lines(path)
    if lines is None or not 1 <= line <= len(lines):
        return None
    text = "\n".join(lines[line - 1 :])
    depth, index, opened = 0, 0, False
    state = ""  # "", "str", "chr", "line-comment", "block-comment"
    while index < len(text):
        char, pair = text[index], text[index : index + 2]
        if state == "line-comment":
            state = "" if char == "\n" else state
        elif state == "block-comment":
            if pair == "*/":
                state, index = "", index + 1
        elif state in ("str", "chr"):
            if char == "\\":
                index += 1
            elif char == ('"' if state == "str" else "'"):
                state = ""
        elif pair == "//":
            state = "line-comment"
        elif pair == "/*":
            state = "block-comment"
        elif char in "\"'":
            state = "str" if char == '"' else "chr"
        elif char == ";" and not opened:
            return None  # a prototype, not a definition
        elif char == "{":
            depth, opened = depth + 1, True
        elif char == "}":
            depth -= 1
            if opened and depth == 0:
                return text[: index + 1]
        index += 1
    return None


def line_map(old: Path, new: Path) -> dict[int, int]:
    """For each line of OLD left unchanged in NEW, its new line number (both 1-based)."""
    before, after = read_lines(old), read_lines(new)
    if before is None or after is None:
        return {}
    mapping: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            mapping[block.a + offset + 1] = block.b + offset + 1
    return mapping
