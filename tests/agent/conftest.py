"""Fixtures for the online agent's tests: a real `nonstop serve` on loopback (SQLite), real
target processes (the engine tests' hardened nsfix fixture), and nonstopctl run as a
real process with a private configuration, state and cache."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import LiveServer, live_server
from tests.userspace import conftest as engine_tests
from tests.userspace.conftest import NONSTOPCTL, FixtureBuild, Target

# The engine tests' fixtures: libnsfix built with Debian's hardening flags, its
# level 1-3 bundles signed by the session's vendor key, running nsfix_prog targets, and a
# private nonstopctl environment (config, state, cache).
fixture_build = engine_tests.fixture_build
bundles = engine_tests.bundles
start_target = engine_tests.start_target
agent_env = engine_tests.agent_env


@pytest.fixture(scope="module")
def patch_server(
    tmp_path_factory: pytest.TempPathFactory, trusted_dir: Path
) -> Iterator[LiveServer]:
    """A real patch server on loopback with the embedded defaults (SQLite in its data dir)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('agent-db')}/nonstop.db"
    with live_server(tmp_path_factory, url, trusted_dir) as running:
        yield running


class Admin:
    """What an operator does on the patch server, through the admin API."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.server.admin() as admin:
            response = admin.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def key(self, feed: str = "test", **fields: Any) -> dict[str, Any]:
        body = {"name": f"key-{uuid.uuid4().hex[:8]}", "feed": feed, **fields}
        created: dict[str, Any] = self.call("POST", "/api/v1/admin/keys", json=body)
        return created

    def feed(self, delay_hours: int) -> str:
        name = f"feed-{uuid.uuid4().hex[:8]}"
        self.call("POST", "/api/v1/admin/feeds", json={"name": name, "delay_hours": delay_hours})
        return name

    def upload(self, path: Path) -> dict[str, Any]:
        with self.server.admin() as admin:
            response = admin.post(
                "/api/v1/admin/bundles",
                content=path.read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
        assert response.status_code in (200, 201), response.text
        uploaded: dict[str, Any] = response.json()
        return uploaded

    def retire_all(self) -> None:
        for bundle in self.call("GET", "/api/v1/admin/bundles")["bundles"]:
            self.call("POST", f"/api/v1/admin/bundles/{bundle['sha256']}/retire")

    def host(self, host_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/api/v1/admin/hosts/{host_id}")
        return found


@pytest.fixture(scope="module")
def admin(patch_server: LiveServer) -> Admin:
    return Admin(patch_server)


@dataclass
class Agent:
    """nonstopctl with its own configuration, state and cache, run as a real process."""

    directory: Path
    env: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.directory / "nonstopctl.toml"

    @property
    def state(self) -> Path:
        return self.directory / "state"

    def configure(self, **settings: Any) -> None:
        self.settings.update(settings)
        lines = []
        tables = []
        for key, value in self.settings.items():
            if isinstance(value, dict):  # a table, e.g. blocklist = {"patterns": [...]}
                tables.append(f"[{key}]")
                tables += [f"{name} = {json.dumps(items)}" for name, items in value.items()]
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, int | float):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f'{key} = "{value}"')
        self.config.write_text("\n".join(lines + tables) + "\n")

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*NONSTOPCTL, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, expect: int | None = 0) -> dict[str, Any]:
        done = self.run("--json", *args)
        if expect is not None:
            assert done.returncode == expect, (done.returncode, done.stdout, done.stderr)
        document: dict[str, Any] = json.loads(done.stdout)
        return document

    def register(self, server: LiveServer, key: str) -> dict[str, Any]:
        return self.json("--register", key, "--server", server.url)

    def registration(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.state / "registration.json").read_text())
        return document


@pytest.fixture
def agent(tmp_path: Path, trusted_dir: Path) -> Agent:
    made = Agent(tmp_path / "agent", dict(os.environ))
    made.directory.mkdir()
    made.env["NONSTOP_CONFIG"] = str(made.config)
    made.env.pop("NONSTOP_TRUSTED_KEYS", None)
    made.configure(
        trusted_keys_dir=str(trusted_dir),
        state_dir=str(made.state),
        cache_dir=str(made.directory / "cache"),
        server_timeout_seconds=5,
        server_attempts=2,
    )
    return made


@pytest.fixture
def published(admin: Admin, bundles: dict[int, Path]) -> Callable[..., list[dict[str, Any]]]:
    """Publish the given nsfix levels on the server (each uploaded at most once)."""

    def publish(*levels: int) -> list[dict[str, Any]]:
        return [admin.upload(bundles[level]) for level in levels]

    return publish


def library_entry(document: dict[str, Any], build_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in document["libraries"] if e["build_id"] == build_id)
    return found


def nsfix_build_id(build: FixtureBuild) -> str:
    from nonstop.bundle.identity import userspace_target_of

    return userspace_target_of(build.library, with_package=False).build_id


def level_of(target: Target) -> str:
    """The level the running target reports, from outside (its `version` command)."""
    return target.ask("version")


def healthy(server: LiveServer) -> bool:
    return httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
