"""A process's name is chosen by whoever runs it: nonstopctl's text output never passes its
control characters (terminal escape sequences, bidi overrides) to root's terminal."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest

from nonstop.console import printable
from tests.userspace.conftest import FixtureBuild, nonstopctl
from tests.userspace.hostile import public_dir, public_library, start_as_nobody

__all__ = ["public_dir", "public_library"]  # fixtures

# Sets the terminal's title, then reverses what follows on screen.
HOSTILE_NAME = "nsfix\x1b]2;owned\x07\u202eprog\r"


@pytest.fixture
def hostile_target(public_library: Path, fixture_build: FixtureBuild) -> Iterator[Popen[str]]:
    program = public_library.parent / HOSTILE_NAME
    shutil.copyfile(fixture_build.program, program)
    program.chmod(0o755)
    process = start_as_nobody([str(program), "0", "1"])
    assert process.stdout is not None and process.stdout.readline().startswith("ready")
    yield process
    process.kill()
    process.wait()
    program.unlink()


def test_printable_keeps_text_and_shows_controls() -> None:
    assert printable("plain /usr/bin/x\tcol\nline") == "plain /usr/bin/x\tcol\nline"
    assert printable("a\x1b[31mb\x07\x7f\x9b\u202e\r") == "a\\x1b[31mb\\x07\\x7f\\x9b\\u202e\\x0d"


def test_lib_commands_never_print_a_process_name_raw(
    hostile_target: Popen[str], bundles: dict[int, Path], agent_env: dict[str, str]
) -> None:
    pid = str(hostile_target.pid)
    for argv in (
        ["--lib-update", "--bundle", str(bundles[1]), "--pid", pid],
        ["--lib-info"],
        ["--lib-unload", "--pid", pid],
    ):
        done = nonstopctl(agent_env, *argv)
        assert done.returncode == 0, done.stderr
        line = next(line for line in done.stdout.splitlines() if line.startswith(pid))
        assert "nsfix\\x1b]2;owned\\x07\\u202eprog\\x0d" in line
        assert not any(ch in done.stdout + done.stderr for ch in "\x1b\x07\u202e\r")
