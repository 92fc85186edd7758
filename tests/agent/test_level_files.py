"""The level files scanners read on the host follow what the agent does to real processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nonstop.agent.level_files import level_dir, write_kernel_file
from tests.agent.conftest import Agent, nsfix_build_id

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="patching running processes needs root (ptrace); run as root"
)


def test_a_library_file_says_the_level_every_process_runs(
    agent: Agent, start_target, bundles: dict[int, Path], fixture_build
) -> None:
    levels = level_dir(agent.state)
    library_file = levels / f"lib-{nsfix_build_id(fixture_build)}"
    first = start_target(busy=1, sleepers=1)
    start_target(busy=0, sleepers=1)
    levels.mkdir(parents=True, exist_ok=True)
    (levels / "notes.txt").write_text("not the agent's\n")

    agent.json("--lib-update", "--bundle", str(bundles[1]), "--pid", str(first.pid))
    assert library_file.read_text() == "level=0\n"  # the second process runs it unpatched
    assert oct(library_file.stat().st_mode & 0o777) == oct(0o644)

    agent.json("--lib-update", "--bundle", str(bundles[2]))
    assert library_file.read_text() == "level=2\n"

    agent.json("--lib-unload")
    assert not library_file.exists()
    assert (levels / "notes.txt").read_text() == "not the agent's\n"  # only its own files go


def test_the_kernel_file_is_written_and_removed(tmp_path: Path) -> None:
    write_kernel_file(tmp_path, 3)
    assert (tmp_path / "kernel").read_text() == "level=3\n"
    write_kernel_file(tmp_path, None)
    assert not (tmp_path / "kernel").exists()
