"""Reading the small files a user hands to nonstop (keys, bundles, recipes, configuration).

Shared by every part, like ``console``: each read is bounded in size (a path
may name /dev/zero or a huge file) and every failure becomes the caller's own
exception with one line naming the file and the cause.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

MAX_TOML_BYTES = 1024 * 1024
"""Recipes and configuration files are a few kilobytes; anything past this is not one."""


def read_bounded(
    path: Path,
    limit: int,
    what: str,
    error: type[Exception],
    too_large: type[Exception] | None = None,
) -> bytes:
    """The bytes of PATH, at most LIMIT of them; ERROR("WHAT ...") names what went wrong
    (TOO_LARGE, when given, for a file past LIMIT)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} path is a directory: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise (too_large or error)(f"{what} {path} is larger than {limit} bytes")
    return data


def load_toml(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """The TOML document in PATH (bounded, UTF-8); ERROR("WHAT ...") names what went wrong."""
    data = read_bounded(path, MAX_TOML_BYTES, what, error)
    try:
        return tomllib.loads(data.decode())
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from None
