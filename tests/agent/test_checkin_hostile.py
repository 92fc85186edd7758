"""Check-in with a process that forged patch memory on the host (it used to stop --status
and --auto-update with a TypeError, so the host received no patches at all)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest

from tests.agent.conftest import Admin, Agent, level_of, nsfix_build_id
from tests.userspace.hostile import FORGER, public_dir, public_library, start_python_as_nobody
from tests.userspace.region_forgery import forged_headers, forger_line, library_build_id

__all__ = ["public_dir", "public_library"]  # fixtures
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reading other processes: root")


@pytest.fixture
def forger(public_library: Path) -> Iterator[Popen[str]]:
    shapes = forged_headers(library_build_id(public_library))
    line = forger_line(public_library, list(shapes.values()))
    process = start_python_as_nobody(FORGER, str(public_library), stdin_line=line)
    yield process
    process.kill()
    process.wait()


def test_checkin_and_update_go_on_beside_forged_patch_memory(
    agent: Agent, patch_server, admin: Admin, published, start_target, fixture_build, forger
) -> None:
    target = start_target(busy=1, sleepers=1)
    agent.register(patch_server, admin.key()["key"])
    published(1)

    status = agent.run("--status")
    assert status.returncode == 2 and "Traceback" not in status.stderr, status.stderr
    document = agent.json("--auto-update")
    (applied,) = document["online"]["applied"]
    results = {p["pid"]: p["result"] for p in applied["processes"]}
    assert results[target.pid] == results[forger.pid] == "patched"
    assert level_of(target) == "1000"

    agent.json("--auto-update")  # reports what the processes now run
    host = admin.host(agent.registration()["host_id"])
    build_id = nsfix_build_id(fixture_build)
    (row,) = [t for t in host["targets"] if t["target"] == f"userspace:{build_id}"]
    assert row["processes"] >= 2  # the forger counted like any other process
    assert forger.poll() is None
