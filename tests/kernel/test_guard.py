"""The crash-loop guard's state machine and its persistence (host only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.agent.state import StateStore
from nonstop.kernel import guard
from nonstop.kernel.state import STATE_NAME, KernelState, LevelRef, Pending

L2 = LevelRef(2, "22" * 32, "nonstop_example_l2", "6.1.192-2+nonstop2")
L3 = LevelRef(3, "33" * 32, "nonstop_example_l3", "6.1.192-2+nonstop3")


def test_confirmed_level_leaves_nothing_pending() -> None:
    state = KernelState()
    guard.begin(state, L2, "boot-a", "t0")
    pending = state.pending
    assert pending is not None and (pending.ref, pending.boot_id) == (L2, "boot-a")
    guard.confirm(state, L2)
    assert state.pending is None and state.current == L2
    assert guard.trip_unconfirmed(state, "boot-b", "t1") is None
    assert state.blocked == []


def test_crash_before_confirmation_blocks_the_level() -> None:
    state = KernelState(current=L2)
    guard.begin(state, L3, "boot-a", "t0")
    # The machine went down here; the next run sees another boot id.
    entry = guard.trip_unconfirmed(state, "boot-b", "t1")
    assert entry is not None and entry.ref == L3
    assert "machine went down while level 3" in entry.reason
    assert state.pending is None and state.current == L2
    with pytest.raises(guard.GuardBlockedError, match="--clear-crash-guard"):
        guard.begin(state, L3, "boot-b", "t2")
    # Other levels are not blocked by it.
    guard.begin(state, L2, "boot-b", "t2")


def test_agent_stopping_in_the_same_boot_also_blocks() -> None:
    state = KernelState()
    guard.begin(state, L3, "boot-a", "t0")
    entry = guard.trip_unconfirmed(state, "boot-a", "t1")
    assert entry is not None and "agent stopped" in entry.reason


def test_clean_failure_is_not_a_crash() -> None:
    state = KernelState(current=L2)
    guard.begin(state, L3, "boot-a", "t0")
    guard.abandon(state)
    assert guard.trip_unconfirmed(state, "boot-b", "t1") is None
    assert state.blocked == [] and state.current == L2


def test_a_level_is_blocked_once_and_clearing_unblocks_it() -> None:
    state = KernelState()
    guard.begin(state, L3, "boot-a", "t0")
    guard.trip_unconfirmed(state, "boot-b", "t1")
    state.pending = Pending(L3, "boot-b", "t2")  # written by an older agent, say
    guard.trip_unconfirmed(state, "boot-c", "t3")
    assert [entry.ref for entry in state.blocked] == [L3]
    cleared = guard.clear(state)
    assert [entry.ref for entry in cleared] == [L3] and state.blocked == []
    guard.begin(state, L3, "boot-c", "t4")


def test_state_round_trips_through_the_atomic_store(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = KernelState(current=L2, wanted=L3)
    guard.begin(state, L3, "boot-a", "t0")
    store.write(STATE_NAME, state.to_dict())
    again = KernelState.from_dict(store.read(STATE_NAME))
    assert again == state
    guard.trip_unconfirmed(again, "boot-b", "t1")
    store.write(STATE_NAME, again.to_dict())
    assert KernelState.from_dict(store.read(STATE_NAME)).blocked[0].ref == L3
    assert KernelState.from_dict({}) == KernelState()


def test_boot_id_is_read_from_proc(tmp_path: Path) -> None:
    path = tmp_path / "boot_id"
    path.write_text("1234-abcd\n")
    assert guard.current_boot_id(path) == "1234-abcd"
    assert len(guard.current_boot_id()) == 36  # this host's real boot id


def test_new_unhealthy_taints_are_named() -> None:
    livepatch_load = (1 << 12) | (1 << 13) | (1 << 15)  # O, E, K: expected when loading
    assert guard.new_problems(0, livepatch_load) == []
    assert guard.new_problems(0, livepatch_load | (1 << 9)) == ["kernel warning (W)"]
    assert guard.new_problems(1 << 9, (1 << 9) | (1 << 7)) == ["oops (D)"]
    assert guard.kernel_taint() >= 0  # this host's real value parses


def test_unhealthy_level_is_blocked_at_once() -> None:
    state = KernelState(current=L2)
    guard.begin(state, L3, "boot-a", "t0")
    guard.block(state, L3, "the kernel reported kernel warning (W)", "t1")
    assert state.pending is None and state.current == L2
    assert [entry.reason for entry in state.blocked] == ["the kernel reported kernel warning (W)"]
