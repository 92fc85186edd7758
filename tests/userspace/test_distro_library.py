"""A real Debian library in a real Debian program: libexpat.so.1 inside /usr/bin/python3.11,
patched and reverted live, the change observed from outside through the program's output."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from nonstop.cli import main as nonstop_main

from .conftest import FIXTURES, nonstopctl
from .helpers import whole_text_matches_file

PYTHON = Path("/usr/bin/python3.11")
LIBEXPAT = Path("/usr/lib/x86_64-linux-gnu/libexpat.so.1")
ORIGINAL = "mismatched tag"
PATCHED = "mismatched tag (patched by nonstop)"


def latest_line(process: subprocess.Popen[str], timeout: float = 5.0) -> str:
    """The newest line the program printed, after draining what was already there."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if not ready:
            if line:
                return line
            continue
        line = process.stdout.readline().strip()
    return line


def wait_for(process: subprocess.Popen[str], expected: str, timeout: float = 5.0) -> bool:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.stdout.readline().strip() == expected:
            return True
    return False


@pytest.fixture
def expat_bundle(tmp_path: Path, key_dir: Path) -> Path:
    if not PYTHON.exists() or not LIBEXPAT.exists():
        pytest.skip(reason="needs Debian's python3.11 and libexpat1 (install-system-deps.sh)")
    patch = tmp_path / "expat_patch.o"
    subprocess.run(
        ["gcc", "-O2", "-fPIC", "-ffunction-sections", "-fdata-sections", "-c", "-o", str(patch),
         str(FIXTURES / "expat" / "xml_error_string_patch.c")],
        check=True,
    )  # fmt: skip
    bundle = tmp_path / "expat.nsb"
    argv = [
        "bundle", "create", "--kind", "userspace", "--target", str(LIBEXPAT.resolve()),
        "--object", str(patch), "--replace", "XML_ErrorString=XML_ErrorString_nonstop",
        "--level", "1", "--cve", "CVE-2099-2001", "--key", str(key_dir), "-o", str(bundle),
    ]  # fmt: skip
    assert nonstop_main(argv) == 0
    return bundle


def test_libexpat_in_debian_python_patched_and_reverted(expat_bundle: Path, agent_env):
    program = subprocess.Popen(
        [str(PYTHON), str(FIXTURES / "expat" / "parse_loop.py")],
        stdout=subprocess.PIPE, text=True, bufsize=1,
    )  # fmt: skip
    try:
        assert wait_for(program, ORIGINAL)
        done = nonstopctl(agent_env, "--lib-update", "--bundle", str(expat_bundle), "--pid",
                          str(program.pid), "--json")  # fmt: skip
        (entry,) = json.loads(done.stdout)["processes"]
        assert entry["result"] == "patched", entry
        assert wait_for(program, PATCHED)
        assert "/memfd:nonstop:" in Path(f"/proc/{program.pid}/maps").read_text()

        done = nonstopctl(agent_env, "--lib-unload", "--pid", str(program.pid), "--json")
        (entry,) = json.loads(done.stdout)["processes"]
        assert entry["result"] == "reverted", entry
        assert wait_for(program, ORIGINAL)
        assert latest_line(program) == ORIGINAL
        assert whole_text_matches_file(program.pid, LIBEXPAT.resolve())
        assert program.poll() is None and os.path.exists(f"/proc/{program.pid}")
    finally:
        program.kill()
        program.wait()
