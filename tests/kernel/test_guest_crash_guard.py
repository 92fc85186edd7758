"""The crash-loop guard and the boot re-apply on Debian's real kernel in QEMU (2 CPUs, three boots).

Boot 1 applies levels 1 and 2 (atomic replace with 2 CPUs), then starts level
3 while a task sleeps in a function level 3 replaces, so its transition
hangs, and resets the guest (sysrq 'b': no sync, no shutdown) before the
agent could confirm level 3. Boot 2, with the same state directory, is the
machine coming back: --auto-update must not load level 3 again but falls back
to the last confirmed level 2, --info says why, an explicit --update of level
3 is refused too, and only after --clear-crash-guard does --auto-update
bring level 3 in. Boot 3 follows boot 2's clean end at level 3: the agent's
service, ``nonstopctl --daemon``, with no patch server configured, loads level 3
again from its verified cache and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import json

import pytest

from tests.kernel.conftest import GuestRuns
from tests.kernel.harness import Results

# Guest boots under software emulation: allow for a loaded machine (the default is 600 s).
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def crash(guest_runs: GuestRuns) -> Results:
    return guest_runs.crash()


def test_two_cpus_atomic_replace(crash: Results) -> None:
    assert crash.text("nproc").strip() == "2"
    assert crash.json("update1")["level"] == 1
    assert crash.text("l1", "cmdline") == "nonstop example: level 1\n"
    assert crash.json("update2")["transition"]["replaced"] == ["nonstop_example_l1"]
    assert crash.text("l2", "cmdline") == "nonstop example: level 2\n"
    assert crash.lines("l2", "patches") == ["nonstop_example_l2"]


def test_reset_happened_before_confirmation(crash: Results) -> None:
    state = json.loads(crash.text("state_at_crash", "json"))
    assert state["pending"]["ref"]["level"] == 3
    assert state["current"]["level"] == 2
    # The agent was still waiting for level 3's transition when the reset came.
    assert crash.text("transition_at_crash").strip() == "1"
    assert crash.text("crash_update").strip() == ""


def test_unconfirmed_level_is_blocked_after_the_crash(crash: Results) -> None:
    info = crash.json("info_boot")
    assert info["level"] is None  # a fresh kernel: nothing loaded yet
    assert info["guard"]["state"] == "blocked"
    assert info["guard"]["pending"]["unconfirmed_across_reboot"] is True
    auto = crash.json("auto1")["kernel"]  # the boot step of --auto-update
    assert auto["guard_tripped"]["level"] == 3
    assert "machine went down" in auto["guard_tripped"]["reason"]
    # Fallback to the last confirmed level, never the blocked one.
    assert auto["action"] == "applied" and auto["level"] == 2
    assert crash.text("auto1", "cmdline") == "nonstop example: level 2\n"
    assert crash.lines("auto1", "patches") == ["nonstop_example_l2"]
    text = crash.text("info_blocked")
    assert "crash-loop guard:  blocked" in text
    assert "blocked level 3: the machine went down" in text


def test_explicit_update_of_blocked_level_is_refused(crash: Results) -> None:
    assert crash.rc("update3_blocked") == 5
    assert "--clear-crash-guard" in crash.text("update3_blocked", "err")


def test_clearing_the_guard_lets_auto_update_load_the_level(crash: Results) -> None:
    assert crash.json("clear")["cleared"][0]["level"] == 3
    auto = crash.json("auto2")["kernel"]
    assert auto["action"] == "applied" and auto["level"] == 3
    assert auto["transition"]["replaced"] == ["nonstop_example_l2"]
    assert crash.text("auto2", "cmdline") == "nonstop example: level 3\n"
    # Level 3 also patches a module loaded only afterwards: reading no longer sleeps.
    assert crash.text("hold_read", "rc").strip() == "0"
    assert crash.text("hold_read", "out") == "released\n"
    assert crash.lines("auto2", "patches") == ["nonstop_example_l3"]


def test_daemon_reapplies_the_level_at_boot_without_a_server(crash: Results) -> None:
    """Third boot: the service that starts at boot loads the confirmed level by itself."""
    assert crash.lines("boot", "patches") == []  # a fresh kernel, nothing loaded yet
    assert crash.text("daemon", "cmdline") == "nonstop example: level 3\n"
    assert crash.text("daemon", "sysfs") == "nonstop_example_l3 enabled=1 transition=0\n"
    log = crash.text("daemon", "err")
    assert "applied level 3 (nonstop_example_l3)" in log
    assert "running:" in log and log.rstrip().endswith("nonstopctl daemon: stopped")
    assert crash.text("daemon", "rc").strip() == "0"  # SIGTERM: a clean stop
    info = crash.json("info_daemon")
    assert info["level"] == 3 and info["guard"]["state"] == "clear"
