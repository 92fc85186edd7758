"""Patch memory forged by a process (user nobody): a memfd named like nonstop's with a header
that is not what the engine writes. It is foreign: reported, never trusted, never touched,
and no command fails for it (it used to stop --lib-info, the inventory and the daemon)."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nonstop.agent.config import Blocklist
from nonstop.agent.inventory import libraries_in_use
from nonstop.userspace import Engine, EngineOptions
from nonstop.userspace.region import MAGIC, memfd_name
from tests.agent.conftest import nsfix_build_id

from .conftest import FixtureBuild, nonstopctl
from .helpers import nonstop_lines
from .hostile import FORGER, public_dir, public_library, start_python_as_nobody
from .test_engine import patched

__all__ = ["public_dir", "public_library"]  # fixtures


def header(body: bytes, state: int = 1, commit: int = 0, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return MAGIC + struct.pack("<QQII", state, commit, size, 0) + body


def plausible(build_id: str, **changes: Any) -> dict[str, Any]:
    """A document shaped like the engine's, for a region of 8192 bytes."""
    site = {"function": "nsfix_get", "entry": 0x1100, "patch_address": 0x1104, "size": 32,
            "original": "f30f1efa55", "replacement": "nsfix_get_fixed", "new": 1024,
            "stub": 256, "trampoline": 288, "slot": 320}  # fmt: skip
    document = {"level": 9, "build_id": build_id, "soname": "libnsfix.so.1",
                "target_path": "/usr/lib/libnsfix.so.1", "info": {}, "sites": [site],
                "code": [256, 2048]}  # fmt: skip
    document.update(changes)
    return document


def encoded(document: Any) -> bytes:
    return json.dumps(document).encode()


def forged_headers(build_id: str) -> dict[str, bytes]:
    site = plausible(build_id)["sites"][0]
    return {
        "a list": header(b"[]"),
        "an empty object": header(b"{}"),
        "a string": header(b'"nonstop"'),
        "a level of the wrong type": header(encoded(plausible(build_id, level="9"))),
        "a boolean level": header(encoded(plausible(build_id, level=True))),
        "a site that is no object": header(encoded(plausible(build_id, sites=[1]))),
        "a stub outside the region": header(
            encoded(plausible(build_id, sites=[{**site, "stub": 1 << 40}]))
        ),
        "fixes that are no objects": header(encoded(plausible(build_id, info={"fixes": [1]}))),
        "an unknown key": header(encoded({**plausible(build_id), "extra": 1})),
        "a control character in the soname": header(
            encoded(plausible(build_id, soname="lib\x1b[2Jx"))
        ),
        "deep nesting": header(b"[" * 50_000 + b"]" * 50_000),
        "a length beyond the region": header(encoded(plausible(build_id)), length=1 << 31),
        "no UTF-8": header(b"\xff\xfe{"),
        "an unknown state": header(encoded(plausible(build_id)), state=99),
        "a commit flag of 7": header(encoded(plausible(build_id)), commit=7),
        "a cut magic": b"NSTPHD",
    }


@pytest.fixture
def forge(public_library: Path) -> Iterator[Callable[[list[bytes]], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(headers: list[bytes], level: int = 9) -> subprocess.Popen[str]:
        name = memfd_name(nsfix_build_id_of(public_library), level)
        line = json.dumps([[name, blob.hex()] for blob in headers])
        process = start_python_as_nobody(FORGER, str(public_library), stdin_line=line)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def nsfix_build_id_of(library: Path) -> str:
    return nsfix_build_id(FixtureBuild(library.parent))


def forged_lines(pid: int) -> int:
    return sum(line.endswith(":L9 (deleted)") for line in nonstop_lines(pid))


def run(agent_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = nonstopctl(agent_env, *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_forged_patch_memory_is_foreign_and_stops_nothing(
    forge, start_target, bundles, agent_env, public_library, tmp_path
) -> None:
    shapes = forged_headers(nsfix_build_id_of(public_library))
    forger = forge(list(shapes.values()))
    other_version = forge([b"NSTPHDR9" + bytes(24)])
    healthy = start_target(busy=1, sleepers=1)
    assert forged_lines(forger.pid) == len(shapes)

    # --lib-info reports each forged region as foreign, and nothing as a live patch.
    done = run(agent_env, "--lib-info", "--json")
    assert done.returncode == 0
    document = json.loads(done.stdout)
    assert document["processes"] == []
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
    done = run(agent_env, "--lib-update", "--bundle", str(bundles[1]), "--json")
    by_pid = {p["pid"]: p for p in json.loads(done.stdout)["processes"]}
    assert by_pid[healthy.pid]["result"] == "patched"
    assert by_pid[forger.pid]["result"] == "patched", by_pid[forger.pid]
    refused = by_pid[other_version.pid]
    assert refused["result"] == "refused" and "use the engine that applied it" in refused["reason"]
    assert healthy.behaviour() == patched(1)
    assert forged_lines(forger.pid) == len(shapes)  # left alone
    assert any(line.endswith(":L1 (deleted)") for line in nonstop_lines(forger.pid))

    info = json.loads(run(agent_env, "--lib-info", "--json").stdout)
    levels = {p["pid"]: p["level"] for p in info["processes"]}
    assert levels == {healthy.pid: 1, forger.pid: 1}
    assert run(agent_env, "--lib-patch-info", "--json").returncode == 0

    # The inventory counts the forger's library like any other, at the level really applied.
    engine = Engine(EngineOptions(lock_dir=tmp_path / "locks"))
    uses = libraries_in_use(engine, Blocklist((), ()))
    use = uses[nsfix_build_id_of(public_library)]
    assert {healthy.pid, forger.pid, other_version.pid} <= use.pids
    assert use.levels[forger.pid] == 1 and use.levels[healthy.pid] == 1

    done = run(agent_env, "--lib-unload", "--json")
    by_pid = {p["pid"]: p for p in json.loads(done.stdout)["processes"]}
    assert by_pid[healthy.pid]["result"] == by_pid[forger.pid]["result"] == "reverted"
    assert forged_lines(forger.pid) == len(nonstop_lines(forger.pid)) == len(shapes)
    assert forger.poll() is None and other_version.poll() is None
