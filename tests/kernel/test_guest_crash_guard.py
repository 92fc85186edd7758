"""The crash-loop guard on Debian's real kernel in QEMU, with 2 guest CPUs, over two boots.

Boot 1 applies levels 1 and 2 (atomic replace with 2 CPUs), then starts level
3 while a task sleeps in a function level 3 replaces, so its transition
hangs, and resets the guest (sysrq 'b': no sync, no shutdown) before the
agent could confirm level 3. Boot 2, with the same state directory, is the
machine coming back: --auto-update must not load level 3 again but falls back
to the last confirmed level 2, --info says why, an explicit --update of level
3 is refused too, and only after --clear-crash-guard does --auto-update
bring level 3 in.
"""

from __future__ import annotations

import json

import pytest

from tests.kernel.conftest import Guest
from tests.kernel.harness import Results

BOOT_BEFORE_CRASH = """
step update1 $CTL --json --update --bundle $B/level1.nsb
snap l1
step update2 $CTL --json --update --bundle $B/level2.nsb
snap l2
hold_task
$CTL --json --update --bundle $B/level3.nsb --transition-timeout 600 > $OUT/crash_update.out 2>&1 &
for i in $(seq 600); do
    if grep -q '"pending": {' $W/state/kernel.json 2>/dev/null &&
       [ "$(cat /sys/kernel/livepatch/nonstop_example_l3/transition 2>/dev/null)" = 1 ]; then
        break
    fi
    sleep 0.1
done
cp $W/state/kernel.json $OUT/state_at_crash.json
cat /sys/kernel/livepatch/nonstop_example_l3/transition > $OUT/transition_at_crash.out
echo b > /proc/sysrq-trigger
sleep 30
echo "still running after the reset request" > $OUT/not_reset
"""

BOOT_AFTER_CRASH = """
step info_boot $CTL --json --info
step auto1 $CTL --json --auto-update
snap auto1
step info_blocked $CTL --info
step update3_blocked $CTL --json --update --bundle $B/level3.nsb
step clear $CTL --json --clear-crash-guard
step auto2 $CTL --json --auto-update
snap auto2
busybox insmod $B/holdtarget.ko
timeout 20 cat /proc/nonstop_hold > $OUT/hold_read.out 2>&1
echo $? > $OUT/hold_read.rc
step info_final $CTL --json --info
"""


@pytest.fixture(scope="module")
def crash(make_guest: Guest) -> Results:
    first = make_guest.boot(BOOT_BEFORE_CRASH, cpus=2)
    # The first boot must end by the reset, with its scenario unfinished.
    assert first.exit_status is None, f"guest was not reset:\n{first.log}"
    assert not (make_guest.work / "out" / "not_reset").exists()
    second = make_guest.boot(BOOT_AFTER_CRASH, cpus=2)
    assert second.exit_status == 0, f"second boot failed:\n{second.log}\n{second.serial[-3000:]}"
    return make_guest.results


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
    auto = crash.json("auto1")
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
    assert crash.rc("update3_blocked") == 1
    assert "--clear-crash-guard" in crash.text("update3_blocked", "err")


def test_clearing_the_guard_lets_auto_update_load_the_level(crash: Results) -> None:
    assert crash.json("clear")["cleared"][0]["level"] == 3
    auto = crash.json("auto2")
    assert auto["action"] == "applied" and auto["level"] == 3
    assert auto["transition"]["replaced"] == ["nonstop_example_l2"]
    assert crash.text("auto2", "cmdline") == "nonstop example: level 3\n"
    # Level 3 also patches a module loaded only afterwards: reading no longer sleeps.
    assert crash.text("hold_read", "rc").strip() == "0"
    assert crash.text("hold_read", "out") == "released\n"
    info = crash.json("info_final")
    assert info["level"] == 3 and info["guard"]["state"] == "clear"
    assert sorted(info["patches"][0]["objects"]) == ["nonstop_holdtarget", "vmlinux"]
