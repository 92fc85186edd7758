"""The real scanner agrees: ``oscap oval eval`` on nonstop's OVAL for this machine's libexpat1.

The findings concern the libexpat1 really installed here (``dpkg-query``),
with fixed versions chosen around it with python-debian, so the test holds
whatever the archive serves. The agent's level files live in a temporary
directory. The verdicts are read from oscap's results XML, never its text.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nonstop.cve.exports import export
from nonstop.cve.model import (
    Finding,
    HostState,
    LivePatchLevel,
    RunningLibrary,
    Status,
    level_state_name,
)
from nonstop.cve.versions import is_older
from tests.cve.exports.hosts import BUILD_ID, WHEN
from tests.cve.oscap import installed_expat, oscap_verdicts

pytestmark = pytest.mark.skipif(
    shutil.which("oscap") is None or shutil.which("dpkg-query") is None,
    reason="needs oscap (openscap-scanner, scripts/install-system-deps.sh) and dpkg",
)


def _level(n: int, cves: set[str]) -> LivePatchLevel:
    return LivePatchLevel(f"userspace:{BUILD_ID}", n, frozenset(cves), "ab" * 32, "x")


@pytest.fixture
def expat() -> tuple[HostState, list[Finding]]:
    """This machine with findings on its libexpat1: live-patched, open, with a bundle, fixed."""
    package = installed_expat()
    newer, older = f"{package.version}+nonstop1", f"{package.version}~nonstop1"
    assert is_older("debian:12", package.version, newer)
    assert is_older("debian:12", older, package.version)
    host = HostState(
        "h-oscap",
        "this-machine",
        "debian:12",
        packages=(package,),
        libraries=(RunningLibrary(BUILD_ID, "libexpat.so.1", "libexpat1", package.version),),
    )
    found = [
        Finding(
            "CVE-2099-0001",
            package.source,
            Status.FIXED_BY_LIVE_PATCH,
            package.version,
            newer,
            live_patch=_level(2, {"CVE-2099-0001"}),
        ),
        Finding("CVE-2099-0002", package.source, Status.OPEN_FIX_AVAILABLE, package.version, newer),
        Finding(
            "CVE-2099-0003",
            package.source,
            Status.OPEN_FIX_AVAILABLE,
            package.version,
            newer,
            available_bundle=_level(3, {"CVE-2099-0003"}),
        ),
        Finding("CVE-2099-0004", package.source, Status.FIXED_BY_PACKAGE, package.version, older),
    ]
    return host, found


def test_oscap_tells_the_live_patched_cve_from_the_open_ones(
    expat: tuple[HostState, list[Finding]], tmp_path: Path
) -> None:
    host, found = expat
    levels = tmp_path / "levels"
    levels.mkdir()
    level_file = levels / level_state_name(BUILD_ID)
    level_file.write_text("level=2\n")
    definitions = export("oval", host, found, generated_at=WHEN, level_dir=str(levels))
    (tmp_path / "schema-check.xml").write_bytes(definitions)
    check = ["oscap", "oval", "validate", str(tmp_path / "schema-check.xml")]
    assert subprocess.run(check, capture_output=True).returncode == 0  # OVAL 5.11 schema

    assert oscap_verdicts(definitions, tmp_path) == {
        "CVE-2099-0001": "false",  # live-patched: level 2 closes it
        "CVE-2099-0002": "true",  # open, no live patch
        "CVE-2099-0003": "true",  # a bundle exists, not applied yet
        "CVE-2099-0004": "false",  # the installed package is the fixed one or newer
    }

    level_file.write_text("level=3\n")  # the agent applied level 3: the same OVAL now says so
    assert oscap_verdicts(definitions, tmp_path)["CVE-2099-0003"] == "false"

    level_file.write_text("level=1\n")  # below the closing level: vulnerable again
    assert oscap_verdicts(definitions, tmp_path)["CVE-2099-0001"] == "true"

    level_file.write_text("level=0\n")  # a process still runs the unpatched code
    assert oscap_verdicts(definitions, tmp_path)["CVE-2099-0001"] == "true"

    level_file.unlink()  # no agent state at all
    assert oscap_verdicts(definitions, tmp_path) == {
        "CVE-2099-0001": "true",
        "CVE-2099-0002": "true",
        "CVE-2099-0003": "true",
        "CVE-2099-0004": "false",
    }
