"""Small synthetic source packages: an unpacked tree with a changelog, a series and patches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nonstop.builders.debian.sources import STAMP, SourcePackage


def changelog_entry(version: str, items: list[str], urgency: str = "medium") -> str:
    body = "\n".join(f"  * {item}" for item in items)
    return (
        f"demo ({version}) bookworm-security; urgency={urgency}\n\n{body}\n\n"
        " -- Jane Doe <jane@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n\n"
    )


def patch_text(header: str, files: dict[str, str]) -> str:
    """A patch with HEADER, changing line 1 of each file in FILES to its value."""
    diffs = "".join(
        f"--- a/{path}\n+++ b/{path}\n@@ -1,1 +1,1 @@\n-old\n+{line}\n"
        for path, line in files.items()
    )
    return f"{header.rstrip()}\n---\n{diffs}"


def make_source(
    root: Path,
    version: str,
    entries: list[str],
    patches: dict[str, str],
    upstream: dict[str, str] | None = None,
    debian: dict[str, str] | None = None,
) -> SourcePackage:
    """A cache entry under ROOT like fetch_source leaves one, without apt.

    ENTRIES are changelog entries newest first; PATCHES maps series names to
    patch texts (series order); UPSTREAM maps upstream files to contents (its
    hash stands for the orig tarball's); DEBIAN adds packaging files.
    """
    directory = root / f"demo_{version}"
    tree = directory / "source"
    (tree / "debian" / "patches").mkdir(parents=True)
    (tree / "debian" / "changelog").write_text("".join(entries))
    (tree / "debian" / "patches" / "series").write_text("".join(f"{n}\n" for n in patches))
    for name, text in patches.items():
        path = tree / "debian" / "patches" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name, text in (debian or {}).items():
        (tree / "debian" / name).write_text(text)
    upstream = upstream or {"lib/parse.c": "old\n"}
    for name, text in upstream.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    digest = hashlib.sha256(json.dumps(upstream, sort_keys=True).encode()).hexdigest()
    (directory / f"demo_{version}.dsc").write_text(
        f"Format: 3.0 (quilt)\nSource: demo\nVersion: {version}\nChecksums-Sha256:\n"
        f" {digest} 1 demo_1.0.orig.tar.xz\n"
    )
    (directory / STAMP).write_text(
        json.dumps({"package": "demo", "version": version, "format": "3.0 (quilt)"})
    )
    return SourcePackage("demo", version, "3.0 (quilt)", directory)
