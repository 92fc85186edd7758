"""End to end on loopback: a real patch server, real processes, nonstopctl as a real process.

Register, check and status in each state, auto-update patching running
processes, sticky pins and delayed feeds (server-side and local), unregister.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.agent.conftest import Admin, Agent, level_of, nsfix_build_id

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="patching running processes needs root (ptrace); run as root"
)


def test_register_stores_a_private_token_and_server_info_never_shows_it(
    agent: Agent, patch_server, admin: Admin
) -> None:
    key = admin.key()
    registered = agent.register(patch_server, key["key"])
    assert registered["action"] == "registered" and registered["key_id"] == key["id"]
    stored = agent.state / "registration.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    record = agent.registration()
    assert record["token"].startswith("nsh_") and record["host_id"] == registered["host_id"]

    info = agent.run("--server-info")
    assert info.returncode == 0
    assert record["token"] not in info.stdout + info.stderr
    assert key["key"] not in info.stdout + info.stderr
    document = agent.json("--server-info")
    assert document["server"] == patch_server.url
    assert document["registration_key_id"] == key["id"]
    assert document["host_id"] == record["host_id"] and document["feed"] == "test"
    assert document["last_checkin"] is None
    assert record["token"] not in json.dumps(document)

    again = agent.run("--register", key["key"], "--server", patch_server.url)
    assert again.returncode == 1 and "already registered" in again.stderr


def test_auto_update_patches_running_processes_and_reports_them(
    agent: Agent, patch_server, admin: Admin, published, start_target, fixture_build
) -> None:
    first = start_target(busy=2, sleepers=1)
    second = start_target(busy=0, sleepers=1)
    assert level_of(first) == "1"
    agent.register(patch_server, admin.key()["key"])
    published(1, 2)

    document = agent.json("--auto-update")
    assert document["kernel"]["action"] == "nothing"
    (applied,) = document["online"]["applied"]
    assert applied["kind"] == "userspace" and applied["level"] == 2
    results = {p["pid"]: p["result"] for p in applied["processes"]}
    assert results[first.pid] == results[second.pid] == "patched"
    assert level_of(first) == level_of(second) == "2000"

    host = admin.host(agent.registration()["host_id"])
    build_id = nsfix_build_id(fixture_build)
    (row,) = [t for t in host["targets"] if t["target"] == f"userspace:{build_id}"]
    assert row["applied_level"] is None  # reported before the update
    document = agent.json("--auto-update")
    assert document["online"]["applied"] == []
    host = admin.host(agent.registration()["host_id"])
    (row,) = [t for t in host["targets"] if t["target"] == f"userspace:{build_id}"]
    assert row["applied_level"] == 2 and row["processes"] >= 2
    assert host["distro_id"] == "debian" and host["agent_version"]

    info = agent.json("--lib-info")
    levels = {p["pid"]: p["level"] for p in info["processes"]}
    assert levels[first.pid] == levels[second.pid] == 2
    assert agent.json("--server-info")["last_checkin"] is not None
