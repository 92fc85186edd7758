"""Fixtures for the userspace engine tests: the C fixture built with Debian's hardening
flags, running target processes, signed bundles made with `nonstop bundle create`."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nonstop.bundle.symbols import symbol_map_of
from nonstop.cli import main as nonstop_main
from nonstop.userspace import Engine, EngineOptions

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "userspace"
FUNCTIONS = (
    "nsfix_get",
    "nsfix_measure",
    "nsfix_kind",
    "nsfix_zero",
    "nsfix_version",
    "nsfix_depth",
    "nsfix_wait_input",
)
PARTIAL_LEVEL = 4
PARTIAL = ("nsfix_get", "nsfix_zero", "nsfix_version", "nsfix_wait_input")
"""Level 4 replaces only these: the others go back to their original code at its commit."""
NONSTOPCTL = [sys.executable, "-c", "from nonstop.agent.cli import main; raise SystemExit(main())"]


@pytest.fixture(scope="session", autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(reason="userspace engine tests need root (ptrace and /proc of other processes)")


@dataclass(frozen=True)
class FixtureBuild:
    directory: Path

    @property
    def library(self) -> Path:
        return self.directory / "libnsfix.so.1"

    @property
    def program(self) -> Path:
        return self.directory / "nsfix_prog"

    def patch_object(self, level: int) -> Path:
        return self.directory / f"patch{level}.o"


@pytest.fixture(scope="session")
def fixture_build(tmp_path_factory: pytest.TempPathFactory) -> FixtureBuild:
    out = tmp_path_factory.mktemp("nsfix")
    subprocess.run(["make", "-s", "-C", str(FIXTURES), f"OUT={out}"], check=True)
    symbols = out / "libnsfix.symbols.json"
    symbols.write_bytes(symbol_map_of(out / "libnsfix.so.1").to_json_bytes())
    return FixtureBuild(out)


class Target:
    """A running nsfix_prog, driven through its stdin/stdout line protocol."""

    def __init__(
        self,
        program: Path,
        busy: int,
        sleepers: int,
        env: dict[str, str] | None = None,
        user: int | None = None,
    ) -> None:
        """USER: run as that uid (and gid, no other groups), exec'd once, as an attacker."""
        as_user: dict[str, Any] = {}
        if user is not None:
            as_user = {"user": user, "group": user, "extra_groups": []}
        self.process = subprocess.Popen(
            [str(program), str(busy), str(sleepers)],
            **as_user,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        ready = self.readline()
        assert ready.startswith("ready"), ready
        self.pid = self.process.pid

    def readline(self, timeout: float = 10.0) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("target did not answer")
        return self.process.stdout.readline().strip()

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.readline()

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", self.ask("stats"))}

    def behaviour(self) -> dict[str, str]:
        """The answer of every replaced function, as seen from outside the process."""
        commands = [
            "get 8",
            "get 3",
            "kind 7",
            "kind 2",
            "zero",
            "version",
            "depth 20",
            "measure abcdefghijk",
        ]
        return {command: self.ask(command) for command in commands}

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def start_target(fixture_build: FixtureBuild) -> Iterator[Callable[..., Target]]:
    started: list[Target] = []

    def start(
        busy: int = 2,
        sleepers: int = 2,
        env: dict[str, str] | None = None,
        program: Path | None = None,
        user: int | None = None,
    ) -> Target:
        target = Target(program or fixture_build.program, busy, sleepers, env, user)
        started.append(target)
        return target

    yield start
    for target in started:
        target.stop()


@pytest.fixture(scope="session")
def bundles(
    fixture_build: FixtureBuild, tmp_path_factory: pytest.TempPathFactory, key_dir: Path
) -> dict[int, Path]:
    """Signed level 1..4 bundles for libnsfix, packed by `nonstop bundle create` (level 4
    replaces fewer functions than the others)."""
    out = tmp_path_factory.mktemp("bundles")
    made = {}
    for level in (1, 2, 3, PARTIAL_LEVEL):
        path = out / f"nsfix-level{level}.nsb"
        argv = [
            "bundle", "create", "--kind", "userspace",
            "--target", str(fixture_build.library),
            "--object", str(fixture_build.patch_object(level)),
            "--symbols", str(fixture_build.directory / "libnsfix.symbols.json"),
            "--level", str(level), "--cve", f"CVE-2099-{1000 + level}",
            "--key", str(key_dir), "-o", str(path),
        ]  # fmt: skip
        for function in PARTIAL if level == PARTIAL_LEVEL else FUNCTIONS:
            argv += ["--replace", f"{function}={function}_fixed"]
        assert nonstop_main(argv) == 0
        made[level] = path
    return made


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(EngineOptions(lock_dir=tmp_path / "locks", cache_dir=tmp_path / "elf"))


@pytest.fixture
def agent_env(tmp_path: Path, trusted_dir: Path) -> dict[str, str]:
    """Environment for running nonstopctl with a private config, state and cache."""
    config = tmp_path / "nonstopctl.toml"
    config.write_text(
        f'trusted_keys_dir = "{trusted_dir}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n'
    )
    env = dict(os.environ)
    env["NONSTOP_CONFIG"] = str(config)
    env.pop("NONSTOP_TRUSTED_KEYS", None)
    return env


def nonstopctl(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NONSTOPCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
