"""What an operator does when something goes wrong, end to end on loopback: a real patch
server, real processes, nonstopctl as a real process.

Held-back levels with their release time, a host deleted on the server, unloading a bad
level so that it stays out, an explicit rollback, two builds of one level, and the support
commands (--doctor, --license-info)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nonstop.bundle import open_bundle
from nonstop.cli import main as nonstop_main
from tests.agent.conftest import Admin, Agent, level_of, nsfix_build_id
from tests.userspace.conftest import FUNCTIONS, FixtureBuild

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="patching running processes needs root (ptrace); run as root"
)
EXIT_SERVER, EXIT_ERROR, EXIT_PARTIAL = 4, 5, 6


def test_levels_the_feed_holds_back_are_shown_with_their_release_time(
    agent: Agent, patch_server, admin: Admin, published, start_target
) -> None:
    start_target(busy=0, sleepers=1)
    uploaded = published(1, 2, 3)
    feed = admin.feed(delay_hours=24)  # like the default stable feed
    agent.register(patch_server, admin.key(feed=feed)["key"])

    status = agent.run("--status")
    assert status.returncode == 1  # nothing to apply yet: "no patches for this host"
    lines = status.stdout.splitlines()
    assert lines[0] == "no patches for this host"
    assert [line.split(" until ")[0] for line in lines[1:]] == [
        f"held back: libnsfix.so.1 level {level}" for level in (1, 2, 3)
    ]
    assert all(line.endswith(f"not yet released on feed {feed}") for line in lines[1:])

    document = agent.json("--check", expect=1)
    published_at = {b["level"]: datetime.fromisoformat(b["published_at"]) for b in uploaded}
    held = {h["level"]: h for h in document["held_back"]}
    assert sorted(held) == [1, 2, 3] and document["available"] == []
    for level, entry in held.items():
        until = datetime.fromisoformat(entry["until"])
        assert until == published_at[level].replace(tzinfo=until.tzinfo) + timedelta(hours=24)
        assert until > datetime.now(UTC) + timedelta(hours=23)
    check = agent.run("--check")
    assert check.returncode == 1 and check.stdout.startswith("no new patch\nheld back: ")

    online = agent.json("--auto-update")["online"]
    assert online["applied"] == [] and len(online["held_back"]) == 3


def test_a_host_deleted_on_the_server_has_one_way_out(
    agent: Agent, patch_server, admin: Admin
) -> None:
    key = admin.key()["key"]
    agent.register(patch_server, key)
    old_id = agent.registration()["host_id"]
    admin.call("DELETE", f"/api/v1/admin/hosts/{old_id}")

    status = agent.run("--status")
    way_out = "run nonstopctl --unregister, then nonstopctl --register KEY"
    assert status.returncode == EXIT_SERVER and way_out in status.stderr
    again = agent.run("--register", key, "--server", patch_server.url)
    assert again.returncode == EXIT_ERROR and "run nonstopctl --unregister first" in again.stderr
    # The way out both messages name works.
    assert agent.json("--unregister")["host_id"] == old_id
    assert agent.register(patch_server, key)["host_id"] != old_id
    assert agent.run("--status").returncode in (0, 1, 2, 3)


def test_an_unloaded_level_stays_out_until_the_operator_or_a_newer_level(
    agent: Agent, patch_server, admin: Admin, published, start_target, fixture_build
) -> None:
    target = start_target(busy=1, sleepers=1)
    published(1, 2, 3)
    agent.register(patch_server, admin.key(sticky="level:2")["key"])
    host_id = agent.registration()["host_id"]
    agent.json("--auto-update")
    assert level_of(target) == "2000"

    agent.json("--lib-unload")
    assert level_of(target) == "1"
    online = agent.json("--auto-update")["online"]  # what the timer or the daemon runs
    assert online["applied"] == [] and level_of(target) == "1"
    (held,) = online["held_back"]
    assert held["level"] == 2 and "took level 2 out" in held["reason"]
    assert agent.run("--status").returncode == 1  # not "updates available"

    # The operator's own --lib-update applies it again (and ends the hold).
    assert [a["level"] for a in agent.json("--lib-update")["applied"]] == [2]
    assert level_of(target) == "2000"
    agent.json("--lib-unload")
    assert level_of(target) == "1"
    # A newer level than the one taken out is applied by the automatic update.
    admin.call("PATCH", f"/api/v1/admin/hosts/{host_id}", json={"sticky": "level:3"})
    assert [a["level"] for a in agent.json("--auto-update")["online"]["applied"]] == [3]
    assert level_of(target) == "3000"
    state = json.loads((agent.state / "userspace.json").read_text())
    assert state["held"] == {} and state["targets"][nsfix_build_id(fixture_build)]["level"] == 3


def test_a_rollback_is_asked_for_with_allow_downgrade_and_stays(
    agent: Agent, patch_server, admin: Admin, published, bundles, start_target
) -> None:
    target = start_target(busy=1, sleepers=1)
    pid = str(target.pid)
    agent.json("--lib-update", "--bundle", str(bundles[2]), "--pid", pid)
    assert level_of(target) == "2000"

    refused = agent.json("--lib-update", "--bundle", str(bundles[1]), "--pid", pid, expect=6)
    (entry,) = refused["processes"]
    assert entry["result"] == "refused" and entry["reason"].endswith("(--allow-downgrade)")
    assert level_of(target) == "2000"
    # A rollback of some processes (--pid) changes them now, not what the host wants.
    other = start_target(busy=0, sleepers=1)
    agent.json("--lib-update", "--bundle", str(bundles[2]), "--pid", str(other.pid))
    agent.json("--lib-update", "--bundle", str(bundles[1]), "--pid", str(other.pid),
               "--allow-downgrade")  # fmt: skip
    assert level_of(other) == "1000"
    state = json.loads((agent.state / "userspace.json").read_text())
    assert [t["level"] for t in state["targets"].values()] == [2] and state["held"] == {}

    rolled = agent.json("--lib-update", "--bundle", str(bundles[1]), "--allow-downgrade")
    entry = next(p for p in rolled["processes"] if p["pid"] == target.pid)
    assert (entry["result"], entry["level_before"], entry["level_after"]) == ("patched", 2, 1)
    assert level_of(target) == "1000" and level_of(other) == "1000"

    # The server still offers level 2: automatic updates leave the rollback in place.
    published(1, 2)
    agent.register(patch_server, admin.key(sticky="level:2")["key"])
    online = agent.json("--auto-update")["online"]
    assert online["applied"] == [] and [h["level"] for h in online["held_back"]] == [2]
    assert level_of(target) == "1000"


def _rebuilt_level_1(fixture_build: FixtureBuild, key_dir: Path, out: Path) -> Path:
    """Another bundle claiming level 1: level 2's code, signed by the same vendor."""
    argv = [
        "bundle", "create", "--kind", "userspace",
        "--target", str(fixture_build.library),
        "--object", str(fixture_build.patch_object(2)),
        "--symbols", str(fixture_build.directory / "libnsfix.symbols.json"),
        "--level", "1", "--key", str(key_dir), "-o", str(out),
    ]  # fmt: skip
    for function in FUNCTIONS:
        argv += ["--replace", f"{function}={function}_fixed"]
    assert nonstop_main(argv) == 0
    return out


def test_the_same_level_from_another_bundle_is_a_conflict(
    agent: Agent, bundles, start_target, fixture_build, key_dir, tmp_path, trusted
) -> None:
    target = start_target(busy=1, sleepers=1)
    pid = str(target.pid)
    agent.json("--lib-update", "--bundle", str(bundles[1]), "--pid", pid)
    assert level_of(target) == "1000"
    other = _rebuilt_level_1(fixture_build, key_dir, tmp_path / "other-level1.nsb")

    done = agent.run("--json", "--lib-update", "--bundle", str(other), "--pid", pid)
    assert done.returncode == EXIT_PARTIAL
    (entry,) = json.loads(done.stdout)["processes"]
    assert entry["result"] == "refused" and "applied from another bundle" in entry["reason"]
    assert level_of(target) == "1000"
    # The same bundle again is simply "already".
    again = agent.json("--lib-update", "--bundle", str(bundles[1]), "--pid", pid)
    assert [p["result"] for p in again["processes"]] == ["already"]
    # Replacing it is a rollback the operator asks for.
    replaced = agent.json("--lib-update", "--bundle", str(other), "--pid", pid, "--allow-downgrade")
    assert [p["result"] for p in replaced["processes"]] == ["patched"]
    assert level_of(target) == "2000"  # level 2's code, under the label level 1
    # For one process only: the host still wants the bundle it had (the daemon keeps it).
    (record,) = json.loads((agent.state / "userspace.json").read_text())["targets"].values()
    assert record["bundle_sha256"] == open_bundle(bundles[1], trusted).sha256


def test_doctor_and_license_info(agent: Agent, patch_server, admin: Admin) -> None:
    key = admin.key()
    agent.register(patch_server, key["key"])
    token = agent.registration()["token"]

    license_info = agent.json("--license-info")
    assert license_info["registration_key_id"] == key["id"]
    assert license_info["server"] == patch_server.url and license_info["feed"] == "test"
    assert license_info["host_id"] == agent.registration()["host_id"]

    doctor = agent.json("--doctor")
    assert doctor["server"] == {"url": patch_server.url, "reachable": True}
    assert doctor["state"]["registration"]["host_id"] == license_info["host_id"]
    assert doctor["host"]["distro"] and doctor["host"]["kernel"] == os.uname().release
    assert doctor["kernel"]["livepatch_supported"] == os.path.isdir("/sys/kernel/livepatch")
    assert doctor["configuration"]["file"] == str(agent.config)
    text = agent.run("--doctor")
    assert text.returncode == 0 and "reachable: True" in text.stdout
    for output in (text.stdout, json.dumps(doctor), json.dumps(license_info)):
        assert token not in output and key["key"] not in output

    # A server that does not answer is a finding of the report, not its failure.
    agent.configure(server_url="http://127.0.0.1:9")
    (agent.state / "registration.json").unlink()
    unreachable = agent.json("--doctor")["server"]
    assert unreachable["reachable"] is False and "cannot reach" in unreachable["error"]
    assert agent.run("--license-info").returncode == EXIT_SERVER
