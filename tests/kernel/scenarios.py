"""The guest scenarios, grouped per boot so the suite fits its time budget.

Each is shell run inside the guest after the helpers of ``harness.scenario``
(``step``, ``snap``, ``hold_task``). The tests assert on what they record.

STORY (1 CPU, one boot): level 1, level 2 by atomic replace, the reports,
refusals of a bundle for another build, of a tampered bundle and (by the
kernel) of a module patching a function it does not have, a level that makes
the kernel warn while it goes in (rolled back to level 2, blocked), a level whose
transition a sleeping task blocks (timeout, revert, the task named), unload,
an unload that a task asleep in the new code blocks (timeout, the patch stays
fully applied), and last (a forced patch can never be unloaded) the same blocked level forced
over because --force-transition was asked for.

CRASH_BEFORE / CRASH_AFTER (2 CPUs, two boots sharing one state dir): levels
1 and 2, then level 3 is started while a task blocks its transition and the
guest is reset (sysrq 'b': no sync, no shutdown) before the agent could
confirm it; the second boot is the machine coming back.

DAEMON_BOOT (2 CPUs, a third boot with the same state dir, after the second
ended cleanly at level 3): the agent's service, ``nonstopctl --daemon``, is
what starts at boot; with no patch server configured it must load the
recorded level from its verified cache by itself, then stop on SIGTERM.
"""

from __future__ import annotations

STORY = """
snap base
step uname0 $CTL --json --uname
step update1 $CTL --json --update --bundle $B/level1.nsb
snap l1
step update2 $CTL --json --update --bundle $B/level2.nsb
snap l2
step info2 $CTL --json --info
step patchinfo2 $CTL --patch-info
step uname2 $CTL --uname
step other_build $CTL --json --update --bundle $B/other_build.nsb
step tampered $CTL --json --update --bundle $B/tampered.nsb
step broken $CTL --json --update --bundle $B/broken.nsb
snap refused
cat /proc/sys/kernel/tainted > $OUT/taint_before_warns.out
step warns $CTL --json --update --bundle $B/warns.nsb
snap warned
hold_task holder
step update3 $CTL --json --update --bundle $B/level3.nsb --transition-timeout 3
snap held
step info_held $CTL --json --info
echo 1 > /proc/nonstop_hold
wait $HOLDER
step unload $CTL --json --unload
snap unloaded
step uname_unloaded $CTL --json --uname
step info_unloaded $CTL --info
step sleepy $CTL --json --update --bundle $B/sleepy.nsb
hold_task holder3
step unload_held $CTL --json --unload --transition-timeout 3
snap unload_held
kill -9 $HOLDER
wait $HOLDER
step unload_sleepy $CTL --json --unload
snap unloaded2
hold_task holder2
step forced $CTL --json --update --bundle $B/level3.nsb --transition-timeout 2 --force-transition
snap forced
echo 1 > /proc/nonstop_hold
wait $HOLDER
"""

CRASH_BEFORE = """
step update1 $CTL --json --update --bundle $B/level1.nsb
snap l1
step update2 $CTL --json --update --bundle $B/level2.nsb
snap l2
hold_task holder
$CTL --json --update --bundle $B/level3.nsb --transition-timeout 600 > $OUT/crash_update.out 2>&1 &
for i in $(seq 1200); do
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
echo "still running after the reset request" > $OUT/not_reset.out
"""

CRASH_AFTER = """
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
"""

DAEMON_BOOT = """
snap boot
$CTL --daemon > $OUT/daemon.out 2> $OUT/daemon.err &
DAEMON=$!
# The patch's sysfs directory appears (transition 0) before its transition starts: wait for
# the patch to be enabled and its transition over.
P=/sys/kernel/livepatch/nonstop_example_l3
for i in $(seq 1200); do
    [ "$(cat $P/enabled 2>/dev/null)$(cat $P/transition 2>/dev/null)" = 10 ] && break
    sleep 0.1
done
snap daemon
for i in $(seq 300); do
    grep -q "running:" $OUT/daemon.err && break
    sleep 0.1
done
kill -TERM $DAEMON
wait $DAEMON
echo $? > $OUT/daemon.rc
step info_daemon $CTL --json --info
"""
