"""Built bundles applied by the engine to running processes: behaviour before and after.

Each test starts the libvuln driver (tests/fixtures/builders/libvuln/vulnprog.c) on
the exact library a bundle is for, shows the bug, applies the bundle with
``nonstopctl --lib-update --bundle FILE --pid PID --json`` and shows the fix in
the same running process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.builders.driven import Driven
from tests.builders.userspace.conftest import LIBVULN, BuildFixes
from tests.userspace import conftest as engine_tests
from tests.userspace.conftest import nonstopctl

agent_env = engine_tests.agent_env  # nonstopctl with a private config, as the engine's tests use

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="applying bundles live needs root (ptrace); run the tests as root"
)


@pytest.fixture(scope="session")
def vulnprog(tmp_path_factory: pytest.TempPathFactory, build_fixes: BuildFixes) -> Path:
    """The driver program; LD_LIBRARY_PATH picks the libvuln.so.1 it runs on."""
    library = build_fixes("bounds").result.target_copy
    assert library is not None
    program = tmp_path_factory.mktemp("vulnprog") / "vulnprog"
    subprocess.run(
        ["gcc", "-O2", "-fPIE", "-pie", f"-I{LIBVULN}", "-o", str(program),
         str(LIBVULN / "vulnprog.c"), "-L", str(library.parent), "-l:libvuln.so.1"],
        check=True,
    )  # fmt: skip
    return program


@pytest.fixture
def running(vulnprog: Path) -> Iterator[Any]:
    started: list[Driven] = []

    def start(library: Path) -> Driven:
        started.append(Driven(vulnprog, library))
        return started[-1]

    yield start
    for driven in started:
        driven.process.kill()
        driven.process.wait(timeout=10)


def ctl_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = nonstopctl(env, *args, "--json", timeout=120)
    assert done.stdout, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def apply(env: dict[str, str], bundle: Path | None, pid: int) -> dict[str, Any]:
    assert bundle is not None
    document = ctl_json(env, "--lib-update", "--bundle", str(bundle), "--pid", str(pid))
    (process,) = document["processes"]
    assert process["pid"] == pid and process["result"] == "patched", process
    return process


# fix -> (commands, answers before, answers after)
SINGLE_FIXES = {
    "bounds": (["get 5", "get 2"], ["666", "30"], ["-1", "30"]),
    "helper": (["sum 100", "sum 10"], ["100", "10"], ["64", "10"]),
    "inline": (["scale 10", "offset 10", "scale 3"], ["20", "110", "6"], ["-1", "-1", "6"]),
    "switch": (["fmt 5 3", "fmt 1 2"], ["unknown", "warn:4"], ["overflow:3", "warn:4"]),
    "static-var": (
        ["login 0"] * 5 + ["login 1"],
        ["-1"] * 5 + ["0"],
        ["-1"] * 3 + ["-2"] * 2 + ["0"],
    ),
    "cold": (["port 80", "port -3"], ["81", "-1"], ["80", "-1"]),
    "clone": (["weigh 1000", "weigh 5"], ["3004", "19"], ["3001", "19"]),
}


@pytest.mark.parametrize("fix", sorted(SINGLE_FIXES))
def test_built_bundle_fixes_a_running_process(
    fix: str, build_fixes: BuildFixes, running: Any, agent_env: dict[str, str]
) -> None:
    built = build_fixes(fix)
    assert built.result.target_copy is not None
    commands, before, after = SINGLE_FIXES[fix]
    driven = running(built.result.target_copy)
    assert driven.answers(commands) == before
    entry = apply(agent_env, built.level(1).bundle, driven.pid)
    assert entry["level_after"] == 1
    assert sorted(entry["functions"]) == sorted(
        f.target for f in built.bundle(1).manifest.functions
    )
    assert driven.answers(commands) == after


def test_levels_one_to_three_replace_each_other_live(
    build_fixes: BuildFixes, running: Any, agent_env: dict[str, str]
) -> None:
    built = build_fixes("bounds", "inline", "switch")
    assert built.result.target_copy is not None
    driven = running(built.result.target_copy)
    commands = ["get 5", "scale 10", "fmt 5 3"]
    expected = {
        0: ["666", "20", "unknown"],
        1: ["-1", "20", "unknown"],
        2: ["-1", "-1", "unknown"],
        3: ["-1", "-1", "overflow:3"],
    }
    assert driven.answers(commands) == expected[0]
    for level in (1, 2, 3):
        entry = apply(agent_env, built.level(level).bundle, driven.pid)
        assert (entry["level_before"], entry["level_after"]) == (level - 1 or None, level)
        assert driven.answers(commands) == expected[level]
    # Level 3 replaced levels 1 and 2: one patch mapping left, named after its level.
    maps = Path(f"/proc/{driven.pid}/maps").read_text()
    build_id = built.result.reproduction.target.build_id
    levels = set(re.findall(rf"{build_id}:L(\d+)", maps))
    assert levels == {"3"}, levels
    document = ctl_json(agent_env, "--lib-unload", "--pid", str(driven.pid))
    assert [p["result"] for p in document["processes"]] == ["reverted"]
    assert driven.answers(commands) == expected[0]


def test_stripped_library_fix_calls_its_static_function_live(
    build_fixes: BuildFixes, stripped_libvuln: Path, running: Any, agent_env: dict[str, str]
) -> None:
    built = build_fixes("static-call", target=stripped_libvuln)
    driven = running(stripped_libvuln)
    commands = ["clamp 5000", "clamp -5", "clamp 123456", "tag 7", "unorm 3"]
    assert driven.answers(commands) == ["5000", "-5", "99999", "5007", "31"]
    apply(agent_env, built.level(1).bundle, driven.pid)
    # vuln.c's normalize() (v % 1000, negatives to 0), not util.c's (v * 10): the link held.
    assert driven.answers(commands) == ["0", "0", "99999", "5007", "31"]
