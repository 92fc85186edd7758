"""A target that swaps the patch memfd for another file: root writes nothing but that memfd.

The attacker (user nobody) maps libnsfix and inherited an O_PATH fd of a root-only file; a
thread dup2()s it onto every new fd, racing the agent's injected memfd_create. The agent
must end with a one-line refusal, the root file byte-identical, the attacker untouched."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonstop.agent.actions import EXIT_PARTIAL

from .conftest import nonstopctl
from .helpers import nonstop_lines, whole_text_matches_file
from .hostile import ask, fd_swapper, public_dir, public_library, root_secret, start_as_nobody

__all__ = ["fd_swapper", "public_dir", "public_library"]  # fixtures
ATTEMPTS = 30
"""Runs at most: the race is won by the attacker only when one of its threads has a CPU."""


@pytest.fixture
def swapper(fd_swapper: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    secret = root_secret(tmp_path)
    fd = os.open(secret, os.O_PATH | os.O_CLOEXEC)
    try:
        process = start_as_nobody([str(fd_swapper), str(fd)], pass_fds=(fd,))
    finally:
        os.close(fd)
    assert process.stdout is not None
    assert process.stdout.readline().startswith("ready 1")
    yield process, secret
    process.kill()
    process.wait()


def test_a_swapped_memfd_is_refused_and_the_root_file_stays_intact(
    swapper: tuple[subprocess.Popen[str], Path],
    fd_swapper: Path,
    bundles: dict[int, Path],
    agent_env: dict[str, str],
) -> None:
    process, secret = swapper
    before = secret.read_bytes()
    refusals = 0
    for _ in range(ATTEMPTS):
        done = nonstopctl(agent_env, "--lib-update", "--bundle", str(bundles[1]), "--pid",
                          str(process.pid), "--json")  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr
        assert secret.read_bytes() == before
        (entry,) = json.loads(done.stdout)["processes"]
        if entry["result"] == "patched":  # the attacker lost this race: try again
            assert nonstopctl(agent_env, "--lib-unload", "--pid", str(process.pid)).returncode == 0
            continue
        assert (done.returncode, entry["result"]) == (EXIT_PARTIAL, "refused"), entry
        assert "replaced by another file inside the target" in entry["reason"]
        refusals += 1
        if refusals == 3:
            break
    assert refusals, f"the attacker never won the race in {ATTEMPTS} runs"
    # Nothing of a patch is left in the attacker: no patch memory, no jump, no gadget.
    assert process.poll() is None and ask(process, "version") == "version=1"
    assert nonstop_lines(process.pid) == []
    assert whole_text_matches_file(process.pid, fd_swapper.parent / "libnsfix.so.1")
