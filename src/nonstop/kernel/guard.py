"""The crash-loop guard: a level that may have brought the machine down is not loaded again.

Before a module is loaded the agent records the level as *pending*, with the
boot id, and fsyncs that record; once the transition has finished and the
patch is enabled it *confirms* the level. Finding a pending record later means
the agent never got to confirm: if the boot id changed, the machine went down
while the level was going in. The level then becomes *blocked*: nothing loads
it automatically (not even at boot) until an operator clears the guard.
A transition that fails cleanly (timed out and reverted) is not a crash and
just drops the pending record.

"Healthy" means more than a finished transition: if the kernel raised an
oops, a warning, a soft lockup, a bad page or a machine check (new taint
flags in /proc/sys/kernel/tainted) while the level went in, the level is
blocked at once and rolled back by the agent (``nonstop.agent.kernel_levels``).
"""

from __future__ import annotations

from pathlib import Path

from nonstop.kernel.errors import KernelError
from nonstop.kernel.state import Blocked, KernelState, LevelRef, Pending

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
TAINTED = Path("/proc/sys/kernel/tainted")
# Taint bits that mean the kernel itself saw something go wrong (see
# Documentation/admin-guide/tainted-kernels.rst); loading an unsigned
# out-of-tree livepatch sets other, expected ones (O, E, K).
UNHEALTHY_TAINTS = {
    4: "machine check (M)",
    5: "bad page (B)",
    7: "oops (D)",
    9: "kernel warning (W)",
    14: "soft lockup (L)",
}


class GuardBlockedError(KernelError):
    """The level is blocked by the crash-loop guard."""


def current_boot_id(path: Path = BOOT_ID) -> str:
    """The running boot's id (a UUID the kernel draws anew at every boot).

    A pending record with another boot id was left by a boot that went down.
    """
    return path.read_text().strip()


def kernel_taint(path: Path = TAINTED) -> int:
    """The kernel's taint bit mask; bits are only ever added until reboot, never cleared."""
    return int(path.read_text().strip())


def new_problems(before: int, after: int) -> list[str]:
    """The unhealthy taint flags set in AFTER that were not set in BEFORE."""
    appeared = after & ~before
    return [name for bit, name in sorted(UNHEALTHY_TAINTS.items()) if appeared & (1 << bit)]


def blocked_entry(state: KernelState, ref: LevelRef) -> Blocked | None:
    """The block on REF, or None; matched by bundle SHA-256, so a rebuilt bundle is not blocked."""
    return next((b for b in state.blocked if b.ref.bundle_sha256 == ref.bundle_sha256), None)


def begin(state: KernelState, ref: LevelRef, boot_id: str, now: str) -> None:
    """Record REF as pending; refuse a blocked level."""
    entry = blocked_entry(state, ref)
    if entry is not None:
        raise GuardBlockedError(
            f"{ref.describe()} is blocked by the crash-loop guard ({entry.reason}); "
            "clear it with nonstopctl --clear-crash-guard after investigating"
        )
    state.pending = Pending(ref, boot_id, now)


def confirm(state: KernelState, ref: LevelRef) -> None:
    """REF is applied and healthy: it becomes the current level."""
    state.pending = None
    state.current = ref


def block(state: KernelState, ref: LevelRef, reason: str, now: str) -> None:
    """REF went in but proved unhealthy: block it now (it is no longer pending)."""
    state.pending = None
    if blocked_entry(state, ref) is None:
        state.blocked.append(Blocked(ref, reason, now))


def abandon(state: KernelState) -> None:
    """The pending level failed cleanly (the kernel is as before): forget it."""
    state.pending = None


def trip_unconfirmed(state: KernelState, boot_id: str, now: str) -> Blocked | None:
    """Turn an unconfirmed pending level into a blocked one; return the new block, if any.

    Call this only while holding the kernel state lock: a pending record seen
    then belongs to an agent run that can no longer confirm it.
    """
    pending = state.pending
    if pending is None:
        return None
    if pending.boot_id != boot_id:
        reason = f"the machine went down while {pending.ref.describe()} was being applied"
    else:
        reason = f"the agent stopped while {pending.ref.describe()} was being applied"
    block(state, pending.ref, reason, now)
    return blocked_entry(state, pending.ref)


def clear(state: KernelState) -> list[Blocked]:
    """Operator's decision: unblock every blocked level; return what was cleared."""
    cleared, state.blocked = state.blocked, []
    return cleared
