"""`nonstopctl --daemon` as a real process: boot re-apply without network, new processes
patched soon after exec (proc connector), the /proc rescan, SIGHUP and SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent.conftest import Agent, level_of
from tests.userspace.conftest import NONSTOPCTL

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the daemon patches processes (ptrace) and hears exec events: root"
)


class DaemonProcess:
    def __init__(self, agent: Agent) -> None:
        self.log_path = agent.directory / "daemon.log"
        self.log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*NONSTOPCTL, "--daemon"], env=agent.env, stdout=self.log_file, stderr=self.log_file
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log())
            if found:
                return found
            assert self.process.poll() is None, f"daemon exited: {self.log()}"
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} not in the daemon log:\n{self.log()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        finally:
            self.log_file.close()
        return code


@pytest.fixture
def start_daemon(agent: Agent) -> Iterator[Callable[[], DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start() -> DaemonProcess:
        daemon = DaemonProcess(agent)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def wait_level(target, expected: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while level_of(target) != expected:
        assert time.monotonic() < deadline, f"level {level_of(target)}, expected {expected}"
        time.sleep(0.02)


def test_daemon_reapplies_at_start_patches_new_processes_and_rescans(
    agent: Agent, start_target, bundles: dict[int, Path], start_daemon
) -> None:
    # Level 2 recorded and cached, as a host has it after a reboot (no server configured at all:
    # the boot re-apply needs no network).
    before = start_target(busy=0, sleepers=1)
    agent.json("--lib-update", "--bundle", str(bundles[2]))
    before.stop()
    at_boot = start_target(busy=1, sleepers=1)
    assert level_of(at_boot) == "1"
    agent.configure(daemon_rescan_seconds=3600)  # only the exec path can catch new processes

    daemon = start_daemon()
    daemon.wait_for(r"running: 1 userspace target")
    # Re-applied at start without any server; a process younger than the rescan's minimum age
    # goes through the new-process queue (relocation check) first, so allow a moment.
    wait_level(at_boot, "2000", timeout=5)
    assert f"pid {at_boot.pid} " in daemon.log()

    started = [start_target(busy=1, sleepers=1) for _ in range(3)]
    for target in started:
        found = daemon.wait_for(rf"pid {target.pid} \(.*\): libnsfix\.so\.1 level 2 patched, "
                                r"([0-9.]+) ms after exec")  # fmt: skip
        wait_level(target, "2000", timeout=1)
        print(f"pid {target.pid}: patched {found.group(1)} ms after exec")
        assert float(found.group(1)) < 5000  # the 1 s figure is measured in bench/

    # Unloaded by hand from one process: the rescan (forced by SIGHUP) brings it back.
    done = agent.run("--lib-unload", "--pid", str(at_boot.pid))
    assert done.returncode == 0, done.stderr
    assert level_of(at_boot) == "1"
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for("configuration reloaded")
    wait_level(at_boot, "2000")

    assert daemon.stop() == 0
    assert daemon.log().rstrip().endswith("stopped")
    assert all(t.alive() for t in [at_boot, *started])


def test_daemon_leaves_alone_what_is_not_wanted(
    agent: Agent, start_target, bundles: dict[int, Path], start_daemon
) -> None:
    """Nothing recorded: new processes are not touched; a blocklisted one never is."""
    daemon = start_daemon()
    daemon.wait_for(r"running: 0 userspace target")
    target = start_target(busy=0, sleepers=1)
    time.sleep(0.5)
    assert level_of(target) == "1"
    assert daemon.stop() == 0

    agent.json("--lib-update", "--bundle", str(bundles[1]))
    agent.configure(blocklist_note="")  # rewritten below with a blocklist table
    agent.settings.pop("blocklist_note")
    agent.config.write_text(
        agent.config.read_text().replace('blocklist_note = ""\n', "")
        + '[blocklist]\npatterns = ["nsfix_prog$"]\n'
    )
    daemon = start_daemon()
    daemon.wait_for(r"running: 1 userspace target")
    late = start_target(busy=0, sleepers=1)
    daemon.wait_for(rf"pid {late.pid} .*refused.*blocklisted")
    assert level_of(late) == "1"
    assert daemon.stop() == 0


SLOW_LOADER = Path(__file__).parents[1] / "fixtures" / "agent" / "slow_loader.c"


@pytest.fixture(scope="session")
def slow_loader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LD_AUDIT library holding ld.so between mapping libnsfix and relocating it."""
    out = tmp_path_factory.mktemp("audit") / "slow_loader.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(SLOW_LOADER)], check=True)
    return out


def start_slow(program: Path, loader: Path, pause_ms: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(program), "0", "1"],
        env={**os.environ, "LD_AUDIT": str(loader), "NSFIX_AUDIT_MS": str(pause_ms)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_process_still_in_ldso_is_patched_only_once_relocated(
    agent: Agent, start_target, bundles: dict[int, Path], start_daemon, fixture_build, slow_loader
) -> None:
    # An explicit update leaves a process that ld.so has not relocated yet alone.
    starting = start_slow(fixture_build.program, slow_loader, 4000)  # room for a loaded CI
    try:
        time.sleep(0.4)  # libnsfix is mapped now, not relocated
        maps = Path(f"/proc/{starting.pid}/maps").read_text()
        assert "libnsfix.so.1" in maps
        document = agent.json("--lib-update", "--bundle", str(bundles[1]), "--pid",
                              str(starting.pid), expect=6)  # fmt: skip
        (entry,) = document["processes"]
        assert entry["result"] == "busy" and "still starting" in entry["reason"]
        assert starting.stdout is not None
        assert starting.stdout.readline().startswith("ready")
        assert "/memfd:nonstop:" not in Path(f"/proc/{starting.pid}/maps").read_text()
    finally:
        starting.kill()
        starting.wait()

    # The daemon follows it and patches right after relocation, not before.
    agent.json("--lib-update", "--bundle", str(bundles[2]))  # recorded; no process maps it
    daemon = start_daemon()
    daemon.wait_for(r"running: 1 userspace target")
    slow = start_slow(fixture_build.program, slow_loader, 800)
    try:
        found = daemon.wait_for(rf"pid {slow.pid} .* patched, ([0-9.]+) ms after exec")
        assert float(found.group(1)) >= 800  # ld.so was held 800 ms before relocating it
        assert slow.stdout is not None and slow.stdout.readline().startswith("ready")
        assert slow.stdin is not None
        slow.stdin.write("version\n")
        slow.stdin.flush()
        assert slow.stdout.readline().strip() == "2000"
    finally:
        slow.kill()
        slow.wait()
    assert daemon.stop() == 0


def test_a_level_the_operator_unloads_stays_out_while_the_daemon_runs(
    agent: Agent, start_target, bundles: dict[int, Path], start_daemon
) -> None:
    target = start_target(busy=1, sleepers=1)
    agent.json("--lib-update", "--bundle", str(bundles[2]))
    agent.configure(daemon_rescan_seconds=0.5)
    daemon = start_daemon()
    daemon.wait_for(r"running: 1 userspace target")
    assert level_of(target) == "2000"

    agent.json("--lib-unload")  # a bad patch: out of every process, and it must stay out
    assert level_of(target) == "1"
    time.sleep(3)  # several rescans, each of which would re-patch a process lacking the level
    late = start_target(busy=0, sleepers=1)  # nor is a new process patched
    time.sleep(1)
    assert level_of(target) == "1" and level_of(late) == "1"
    assert daemon.process.poll() is None, daemon.log()
    assert daemon.stop() == 0


def test_an_unreadable_record_keeps_the_daemon_and_its_levels(
    agent: Agent, start_target, bundles: dict[int, Path], start_daemon
) -> None:
    """A userspace.json the daemon cannot read (a disk error, a hand edit) is logged; the
    daemon keeps the levels it knew and goes on patching new processes."""
    first = start_target(busy=0, sleepers=1)
    agent.json("--lib-update", "--bundle", str(bundles[2]))
    assert level_of(first) == "2000"
    daemon = start_daemon()
    daemon.wait_for(r"running: 1 userspace target")

    (agent.state / "userspace.json").write_text("{not json")
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for("recorded levels not read, keeping those known")
    later = start_target(busy=0, sleepers=1)
    wait_level(later, "2000", timeout=5)
    assert daemon.stop() == 0
