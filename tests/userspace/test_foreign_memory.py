"""Patch memory forged by a process (user nobody): a memfd named like nonstop's with a header
that is not what the engine writes. It is foreign: reported, never trusted, never touched,
and no command fails for it (it used to stop --lib-info, the inventory and the daemon)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nonstop.agent.config import Blocklist
from nonstop.agent.inventory import libraries_in_use
from nonstop.userspace import Engine, EngineOptions
from nonstop.userspace.region import MAX_REGIONS

from .conftest import nonstopctl
from .helpers import nonstop_lines
from .hostile import FORGER, public_dir, public_library, start_python_as_nobody
from .region_forgery import FORGED_LEVEL, forged_headers, forger_line, header, library_build_id
from .test_engine import patched

__all__ = ["public_dir", "public_library"]  # fixtures


@pytest.fixture
def forge(public_library: Path) -> Iterator[Callable[[list[bytes]], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(headers: list[bytes]) -> subprocess.Popen[str]:
        line = forger_line(public_library, headers)
        process = start_python_as_nobody(FORGER, str(public_library), stdin_line=line)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def forged_lines(pid: int) -> int:
    return sum(line.endswith(f":L{FORGED_LEVEL} (deleted)") for line in nonstop_lines(pid))


def run(agent_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = nonstopctl(agent_env, *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_forged_patch_memory_is_foreign_and_stops_nothing(
    forge, start_target, bundles, agent_env, public_library, tmp_path
) -> None:
    shapes = forged_headers(library_build_id(public_library))
    forger = forge(list(shapes.values()))
    other_version = forge([b"NSTPHDR9" + bytes(24)])
    healthy = start_target(busy=1, sleepers=1)
    assert forged_lines(forger.pid) == len(shapes)
    ours = {forger.pid, other_version.pid, healthy.pid}
    pids = [arg for pid in sorted(ours) for arg in ("--pid", str(pid))]

    # --lib-info (of the whole host: other processes may be patched) reports each forged
    # region as foreign, and nothing as a live patch.
    done = run(agent_env, "--lib-info", "--json")
    assert done.returncode == 0
    document = json.loads(done.stdout)
    assert [p for p in document["processes"] if p["pid"] in ours] == []
    foreign = [f for f in document["foreign"] if f["pid"] == forger.pid]
    assert len(foreign) == len(shapes)
    assert {f["reason"] for f in foreign} == {"no well-formed nonstop header"}
    (newer,) = [f for f in document["foreign"] if f["pid"] == other_version.pid]
    assert newer["reason"] == "header format b'9', which this engine does not know"
    text = run(agent_env, "--lib-info")
    assert text.returncode == 0 and f"{forger.pid}: foreign patch memory at 0x" in text.stdout
    assert "\x1b" not in text.stdout

    # Patching goes on around foreign memory; a process with another version's header is
    # refused (that version's patch may run there), in one line.
    done = run(agent_env, "--lib-update", "--bundle", str(bundles[1]), "--json", *pids)
    by_pid = {p["pid"]: p for p in json.loads(done.stdout)["processes"]}
    assert by_pid[healthy.pid]["result"] == "patched"
    assert by_pid[forger.pid]["result"] == "patched", by_pid[forger.pid]
    refused = by_pid[other_version.pid]
    assert refused["result"] == "refused" and "use the engine that applied it" in refused["reason"]
    assert healthy.behaviour() == patched(1)
    assert forged_lines(forger.pid) == len(shapes)  # left alone
    assert any(line.endswith(":L1 (deleted)") for line in nonstop_lines(forger.pid))

    info = json.loads(run(agent_env, "--lib-info", "--json", *pids).stdout)
    levels = {p["pid"]: p["level"] for p in info["processes"]}
    assert levels == {healthy.pid: 1, forger.pid: 1}
    assert run(agent_env, "--lib-patch-info", "--json", *pids).returncode == 0

    # The inventory counts the forger's library like any other, at the level really applied.
    engine = Engine(EngineOptions(lock_dir=tmp_path / "locks"))
    uses = libraries_in_use(engine, Blocklist((), ()))
    use = uses[library_build_id(public_library)]
    assert {healthy.pid, forger.pid, other_version.pid} <= use.pids
    assert use.levels[forger.pid] == 1 and use.levels[healthy.pid] == 1

    done = run(agent_env, "--lib-unload", "--json", *pids)
    by_pid = {p["pid"]: p for p in json.loads(done.stdout)["processes"]}
    assert by_pid[healthy.pid]["result"] == by_pid[forger.pid]["result"] == "reverted"
    assert forged_lines(forger.pid) == len(nonstop_lines(forger.pid)) == len(shapes)
    assert forger.poll() is None and other_version.poll() is None


def test_only_so_many_patch_memories_are_read_per_process(forge, agent_env) -> None:
    """A process cannot make the agent read unbounded headers: past MAX_REGIONS, none."""
    forger = forge([header(b"[]")] * (MAX_REGIONS + 6))
    done = run(agent_env, "--lib-info", "--json", "--pid", str(forger.pid))
    reasons = [f["reason"] for f in json.loads(done.stdout)["foreign"]]
    assert reasons.count("no well-formed nonstop header") == MAX_REGIONS
    assert reasons.count(f"more than {MAX_REGIONS} patch memories in one process: not read") == 6
