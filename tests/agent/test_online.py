"""End to end on loopback: a real patch server, real processes, nonstopctl as a real process.

Register, check and status in each state, auto-update patching running
processes, sticky pins and delayed feeds (server-side and local), unregister.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from nonstop.agent.actions import EXIT_PARTIAL
from nonstop.agent.packages import installed_packages
from nonstop.bundle import open_bundle, pack
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
    assert again.returncode == 5 and "already registered" in again.stderr


def test_auto_update_patches_running_processes_and_reports_them(
    agent: Agent, patch_server, admin: Admin, published, start_target, fixture_build
) -> None:
    first = start_target(busy=2, sleepers=1)
    second = start_target(busy=0, sleepers=1)
    assert level_of(first) == "1"
    agent.register(patch_server, admin.key()["key"])
    published(1, 2, 3)

    document = agent.json("--auto-update")
    assert document["kernel"]["action"] == "nothing"
    (applied,) = document["online"]["applied"]
    assert applied["kind"] == "userspace" and applied["level"] == 3
    results = {p["pid"]: p["result"] for p in applied["processes"]}
    assert results[first.pid] == results[second.pid] == "patched"
    assert level_of(first) == level_of(second) == "3000"

    host = admin.host(agent.registration()["host_id"])
    build_id = nsfix_build_id(fixture_build)
    (row,) = [t for t in host["targets"] if t["target"] == f"userspace:{build_id}"]
    assert row["applied_level"] is None  # reported before the update
    document = agent.json("--auto-update")
    assert document["online"]["applied"] == []
    host = admin.host(agent.registration()["host_id"])
    (row,) = [t for t in host["targets"] if t["target"] == f"userspace:{build_id}"]
    assert row["applied_level"] == 3 and row["processes"] >= 2
    assert host["distro_id"] == "debian" and host["agent_version"]

    info = agent.json("--lib-info")
    levels = {p["pid"]: p["level"] for p in info["processes"]}
    assert levels[first.pid] == levels[second.pid] == 3
    assert agent.json("--server-info")["last_checkin"] is not None


def _status(agent: Agent) -> int:
    return agent.run("--status").returncode


def _check(agent: Agent) -> int:
    return agent.run("--check").returncode


def test_status_and_check_exit_codes_in_each_state(
    agent: Agent, patch_server, admin: Admin, published, start_target
) -> None:
    target = start_target(busy=1, sleepers=1)
    published(1, 2, 3)
    feed = admin.feed(delay_hours=1000)  # published bundles are not released on it yet
    agent.register(patch_server, admin.key(feed=feed)["key"])

    assert (_status(agent), _check(agent)) == (1, 1)  # no patches for this host
    document = agent.json("--status", expect=1)
    assert document["meaning"] == "no patches for this host" and document["available"] == []

    admin.call("PATCH", f"/api/v1/admin/feeds/{feed}", json={"delay_hours": 0})
    assert (_status(agent), _check(agent)) == (2, 0)  # updates available
    available = agent.json("--check")["available"]
    assert [a["level"] for a in available] == [3]

    agent.json("--auto-update")
    assert level_of(target) == "3000"
    assert (_status(agent), _check(agent)) == (0, 1)  # up to date

    agent.json("--disable-lib")
    livepatch = os.path.isdir("/sys/kernel/livepatch")
    # Without userspace patching only the kernel counts: this kernel has no livepatch.
    assert _status(agent) == (1 if livepatch else 3)
    agent.json("--enable-lib")
    assert _status(agent) == 0


def test_server_side_sticky_pins_and_feed_delay_are_respected(
    agent: Agent, patch_server, admin: Admin, published, start_target
) -> None:
    target = start_target(busy=0, sleepers=1)
    published(1, 2, 3)
    agent.register(patch_server, admin.key(sticky="level:1")["key"])
    host_id = agent.registration()["host_id"]

    document = agent.json("--auto-update")
    assert [a["level"] for a in document["online"]["applied"]] == [1]
    assert level_of(target) == "1000"
    assert _status(agent) == 0  # up to date under its pin

    admin.call("PATCH", f"/api/v1/admin/hosts/{host_id}", json={"sticky": "level:2"})
    agent.json("--auto-update")
    assert level_of(target) == "2000"

    slow = admin.feed(delay_hours=48)
    admin.call("PATCH", f"/api/v1/admin/hosts/{host_id}", json={"sticky": None, "feed": slow})
    document = agent.json("--auto-update")
    assert document["online"]["applied"] == [] and level_of(target) == "2000"
    assert _check(agent) == 1

    admin.call("PATCH", f"/api/v1/admin/hosts/{host_id}", json={"feed": "test"})
    agent.json("--auto-update")
    assert level_of(target) == "3000"


def test_local_sticky_patch_holds_back_newer_levels_and_persists(
    agent: Agent, patch_server, admin: Admin, published, start_target
) -> None:
    target = start_target(busy=0, sleepers=1)
    published(1, 2, 3)
    agent.register(patch_server, admin.key()["key"])

    assert agent.json("--set-sticky-patch", "1")["sticky"] == "level:1"
    assert agent.json("--server-info")["sticky"] == "level:1"  # kept in the state dir
    document = agent.json("--auto-update")
    # The pin travels with the check-in: the server itself offers level 1, not 3.
    assert [a["level"] for a in document["online"]["applied"]] == [1]
    assert document["online"]["held_back"] == []
    assert level_of(target) == "1000"
    assert _check(agent) == 1

    bad = agent.run("--set-sticky-patch", "soon")
    assert bad.returncode == 5 and "not a level or a date" in bad.stderr
    assert agent.json("--set-sticky-patch", "")["sticky"] is None
    agent.json("--auto-update")
    assert level_of(target) == "3000"


def test_unregister_drops_the_registration_and_keeps_the_patches(
    agent: Agent, patch_server, admin: Admin, published, start_target
) -> None:
    target = start_target(busy=0, sleepers=1)
    published(1)
    agent.register(patch_server, admin.key(sticky="level:1")["key"])
    host_id = agent.registration()["host_id"]
    agent.json("--auto-update")
    assert level_of(target) == "1000"

    document = agent.json("--unregister")
    assert document["action"] == "unregistered" and document["host_id"] == host_id
    assert not (agent.state / "registration.json").exists()
    assert admin.host(host_id)["state"] == "unregistered"
    assert level_of(target) == "1000"  # live patches stay
    done = agent.run("--status")
    assert done.returncode == 4 and "not registered" in done.stderr
    assert agent.run("--unregister").returncode == 4
    # Offline, --auto-update still re-applies what is recorded.
    assert agent.json("--auto-update")["online"] == {
        "skipped": "not registered with a patch server"
    }


def test_update_and_lib_update_without_a_bundle_use_the_server(
    agent: Agent, patch_server, admin: Admin, published, start_target
) -> None:
    target = start_target(busy=0, sleepers=1)
    published(1)
    alone = agent.run("--lib-update")
    assert alone.returncode == 5 and "--lib-update needs --bundle FILE" in alone.stderr
    agent.register(patch_server, admin.key(sticky="level:1")["key"])

    kernel_only = agent.json("--update")
    assert kernel_only["applied"] == [] and level_of(target) == "1"
    libraries = agent.json("--lib-update")
    (applied,) = libraries["applied"]
    assert applied["level"] == 1 and level_of(target) == "1000"


def test_a_signed_bundle_the_engine_refuses_is_one_failed_entry_not_a_traceback(
    agent: Agent, patch_server, admin: Admin, bundles, start_target, signing_key, trusted,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A bundle that verifies but that this engine cannot apply (a function without its
    replacement) fails as one entry with its reason; no process is touched."""
    target = start_target(busy=0, sleepers=1)
    original = open_bundle(bundles[1], trusted)
    first, *rest = original.manifest.functions
    broken = dataclasses.replace(
        original.manifest,
        level=40,  # a level of its own on this module's server
        functions=(dataclasses.replace(first, replacement=None), *rest),
    )
    path = tmp_path / "broken.nsb"
    path.write_bytes(pack(broken, dict(original.files), signing_key))
    agent.register(patch_server, admin.key()["key"])
    uploaded = admin.upload(path)
    try:
        done = agent.run("--auto-update", "--json")
        assert done.returncode == EXIT_PARTIAL and "Traceback" not in done.stderr, done.stderr
        (entry,) = json.loads(done.stdout)["online"]["applied"]
        assert entry["action"] == "failed" and "has no replacement symbol" in entry["error"]
        assert level_of(target) == "1"
        text = agent.run("--auto-update")
        assert f"{original.manifest.target.key} level 40: failed: " in text.stdout
    finally:
        admin.call("POST", f"/api/v1/admin/bundles/{uploaded['sha256']}/retire")


def test_the_package_list_is_sent_until_the_server_holds_it(
    agent: Agent, patch_server, admin: Admin
) -> None:
    installed = installed_packages()
    assert installed is not None
    agent.register(patch_server, admin.key()["key"])
    assert not (agent.state / "online.json").exists()  # no check-in yet
    assert _check(agent) in (0, 1)
    # The answer acknowledged the list: later check-ins carry only its digest.
    online = json.loads((agent.state / "online.json").read_text())
    assert online["packages_digest"] == installed.digest
