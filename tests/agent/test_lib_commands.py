"""`nonstopctl --lib-*` end to end, as a separate process, with --json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nonstop.cli import main as nonstop_main
from nonstop.userspace import ptrace
from tests.agent.unprivileged import nonstopctl_as_nobody
from tests.userspace.conftest import FUNCTIONS, nonstopctl
from tests.userspace.helpers import maps_lines, nonstop_lines
from tests.userspace.test_engine import ORIGINAL, patched


def test_update_info_patch_info_unload(start_target, bundles, agent_env):
    target = start_target(busy=2, sleepers=2)
    other = start_target(busy=0, sleepers=1)

    done = nonstopctl(agent_env, "--lib-update", "--bundle", str(bundles[1]), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    by_pid = {p["pid"]: p for p in document["processes"]}
    assert {target.pid, other.pid} <= set(by_pid)  # found by build-id, no --pid given
    entry = by_pid[target.pid]
    assert entry["result"] == "patched" and entry["reason"] == ""
    assert (entry["level_before"], entry["level_after"]) == (None, 1)
    assert entry["functions"] == list(FUNCTIONS)
    assert entry["pause_us"] > 0
    assert target.behaviour() == patched(1) and other.behaviour() == patched(1)

    done = nonstopctl(agent_env, "--lib-update", "--bundle", str(bundles[2]), "--pid",
                      str(target.pid), "--json")  # fmt: skip
    (entry,) = json.loads(done.stdout)["processes"]
    assert (entry["result"], entry["level_before"], entry["level_after"]) == ("patched", 1, 2)
    assert other.behaviour() == patched(1)  # --pid limits the update

    info = json.loads(nonstopctl(agent_env, "--lib-info", "--json").stdout)
    levels = {p["pid"]: p["level"] for p in info["processes"]}
    assert levels[target.pid] == 2 and levels[other.pid] == 1

    patch_info = json.loads(nonstopctl(agent_env, "--lib-patch-info", "--json").stdout)
    (level2,) = [p for p in patch_info["patches"] if p["level"] == 2]
    assert level2["cves"] == ["CVE-2099-1002"] and level2["functions"] == list(FUNCTIONS)
    assert level2["pids"] == [target.pid] and level2["soname"] == "libnsfix.so.1"
    notes = nonstopctl(agent_env, "--lib-patch-info").stdout
    block = notes.split("kpatch-name: libnsfix.so.1/level-2/")[1].split("\n\n")[0]
    assert "kpatch-cve: CVE-2099-1002" in block and "kpatch-processes: 1" in block
    assert "kpatch-cve-url: https://www.cve.org/CVERecord?id=CVE-2099-1002" in block

    done = nonstopctl(agent_env, "--lib-unload", "--pid", str(target.pid), "--json")
    (entry,) = json.loads(done.stdout)["processes"]
    assert entry["result"] == "reverted" and entry["level_before"] == 2
    assert target.behaviour() == ORIGINAL and other.behaviour() == patched(1)
    done = nonstopctl(agent_env, "--lib-unload")
    assert done.returncode == 0 and other.behaviour() == ORIGINAL

    text = nonstopctl(agent_env, "--lib-info")
    assert text.returncode == 0 and "no live userspace patches" in text.stdout


class GuardTracer:
    """Seizes a process's main thread so that any other tracer's attach fails loudly."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        ptrace.seize(pid)

    def release(self) -> None:
        ptrace.interrupt(self.pid)
        ptrace.wait_stop(self.pid, 5)
        ptrace.detach(self.pid)


def tracer_of(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("TracerPid"))


def test_tampered_or_foreign_bundles_are_refused_before_any_attach(
    start_target, bundles, agent_env, tmp_path, key_dir
):
    target = start_target(busy=1, sleepers=1)
    guard = GuardTracer(target.pid)
    try:
        maps_before = maps_lines(target.pid)
        tampered = tmp_path / "tampered.nsb"
        data = bytearray(bundles[1].read_bytes())
        data[len(data) // 2] ^= 0x01
        tampered.write_bytes(bytes(data))
        done = nonstopctl(
            agent_env, "--lib-update", "--bundle", str(tampered), "--pid", str(target.pid)
        )
        assert done.returncode != 0
        assert done.stderr.startswith("nonstopctl: error:") and len(done.stderr.splitlines()) == 1

        # A valid bundle for a library the process does not map (another build-id).
        foreign = tmp_path / "libz.nsb"
        placeholder = tmp_path / "unused.o"
        placeholder.write_bytes(b"\x7fELF never linked")
        argv = [
            "bundle", "create", "--kind", "userspace",
            "--target", "/lib/x86_64-linux-gnu/libz.so.1", "--object", str(placeholder),
            "--replace", "crc32=crc32_fixed", "--level", "1", "--key", str(key_dir),
            "-o", str(foreign),
        ]  # fmt: skip
        assert nonstop_main(argv) == 0
        pid = str(target.pid)
        done = nonstopctl(
            agent_env, "--lib-update", "--bundle", str(foreign), "--pid", pid, "--json"
        )
        (entry,) = json.loads(done.stdout)["processes"]
        assert entry["result"] == "refused" and "does not map" in entry["reason"]
        assert done.returncode == 6  # not applied everywhere
        # Had either run tried to attach, it would have met the guard and said so.
        assert tracer_of(target.pid) == str(os.getpid())
        assert maps_lines(target.pid) == maps_before
    finally:
        guard.release()
    assert target.behaviour() == ORIGINAL


def test_blocklisted_processes_are_refused(start_target, bundles, agent_env, tmp_path):
    target = start_target(busy=1, sleepers=0)
    config = Path(agent_env["NONSTOP_CONFIG"])
    config.write_text(config.read_text() + '\n[blocklist]\npatterns = ["nsfix_prog$"]\n')
    done = nonstopctl(agent_env, "--lib-update", "--bundle", str(bundles[1]), "--pid",
                      str(target.pid), "--json")  # fmt: skip
    (entry,) = json.loads(done.stdout)["processes"]
    assert (entry["result"], entry["reason"]) == ("refused", "blocklisted")
    assert nonstop_lines(target.pid) == []


def test_not_root_gets_a_clear_message(agent_env):
    env = {k: v for k, v in agent_env.items() if k != "NONSTOP_CONFIG"}
    done = nonstopctl_as_nobody(env, "--lib-info")
    assert done.returncode == 77
    assert (
        done.stderr.strip()
        == "nonstopctl: error: --lib-info needs root (run it as root, e.g. with sudo)"
    )
