"""Why an original build does not reproduce the archive's build-id, told in its error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nonstop.builders.debian.original import _toolchain_hint
from nonstop.builders.debian.sources import SourcePackage

ENTRY = "demo (1.0-1) bookworm; urgency=medium\n\n  * Upload.\n\n -- A <a@example.org>  {date}\n"


def source_uploaded(tmp_path: Path, date: str) -> SourcePackage:
    changelog = tmp_path / "source" / "debian" / "changelog"
    changelog.parent.mkdir(parents=True)
    changelog.write_text(ENTRY.format(date=date))
    return SourcePackage("demo", "1.0-1", "3.0 (quilt)", tmp_path)


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc needed (scripts/install-system-deps.sh)")
def test_an_upload_older_than_the_compiler_is_named_as_the_likely_cause(tmp_path: Path) -> None:
    old = _toolchain_hint(source_uploaded(tmp_path / "old", "Mon, 02 Jan 2006 15:04:05 +0000"))
    assert old.startswith("the compiler here, gcc-")
    assert "after demo 1.0-1 was uploaded (2006-01-02): it was likely built with an older" in old
    new = _toolchain_hint(source_uploaded(tmp_path / "new", "Fri, 01 Jan 2999 00:00:00 +0000"))
    assert new == "another compiler, flags or build path than Debian's?"
