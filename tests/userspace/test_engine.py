"""The engine on real processes: the hardened fixture library in a multithreaded PIE program."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from nonstop.bundle import TrustedKeys
from nonstop.userspace import Engine, EngineOptions
from nonstop.userspace.lock import process_lock
from nonstop.userspace.region import State

from .conftest import FUNCTIONS, PARTIAL, PARTIAL_LEVEL, FixtureBuild
from .helpers import (
    clean,
    function_bytes,
    maps_lines,
    nonstop_lines,
    private_dirty_kb,
    regions,
    spec_for,
    whole_text_matches_file,
)

ORIGINAL = {
    "get 8": "2989",  # the off-by-one reads past the table
    "get 3": "13",
    "kind 7": "many",
    "kind 2": "two",
    "zero": "0",
    "version": "1",
    "depth 20": "21",
    "measure abcdefghijk": "7 abcdefg",
}


def patched(level: int) -> dict[str, str]:
    """What the target answers at LEVEL (0: the original code)."""
    if level == 0:
        return ORIGINAL
    replaced = {
        "get 8": "-1",
        "get 3": "13",
        "kind 7": "SEVEN",
        "kind 2": "TWO",
        "zero": str(level),
        "version": str(1000 * level),
        "depth 20": str(20 + level),
        "measure abcdefghijk": f"{7 + 1000 * level} abcdefg",
    }
    if level == PARTIAL_LEVEL:
        return {k: v if f"nsfix_{k.split()[0]}" in PARTIAL else ORIGINAL[k]
                for k, v in replaced.items()}  # fmt: skip
    return replaced


def test_behaviour_changes_live_and_reverts(
    start_target, bundles, trusted: TrustedKeys, engine: Engine
):
    target = start_target(busy=2, sleepers=2)
    assert target.behaviour() == ORIGINAL
    calls_before = int(target.ask("calls").split()[0])

    result = engine.apply(target.pid, spec_for(bundles[1], trusted))
    assert result.result == "patched", result.reason
    assert (result.level_before, result.level_after) == (None, 1)
    assert result.pause_us > 0
    assert target.behaviour() == patched(1)
    # The patched nsfix_get updates the library's global through the executable's COPY.
    calls_after = int(target.ask("calls").split()[0])
    assert calls_after > calls_before
    (region,) = regions(target.pid)
    assert region.state is State.ACTIVE and region.level == 1
    (line,) = [line for line in nonstop_lines(target.pid) if "r-x" in line]
    assert f"nonstop:{region.build_id}:L1" in line

    reverted = engine.revert(target.pid)
    assert reverted.result == "reverted", reverted.reason
    assert target.behaviour() == ORIGINAL
    assert nonstop_lines(target.pid) == []
    assert target.alive()


def test_levels_replace_each_other_with_flat_memory(start_target, bundles, trusted, engine):
    target = start_target(busy=2, sleepers=1)
    vmas_before = len(maps_lines(target.pid))
    seen = []
    for level in (1, 2, 3):
        result = engine.apply(target.pid, spec_for(bundles[level], trusted))
        assert result.result == "patched", result.reason
        assert result.level_before == (level - 1 or None)
        assert target.behaviour() == patched(level)
        assert [r.level for r in regions(target.pid)] == [level]
        seen.append((len(maps_lines(target.pid)), private_dirty_kb(target.pid)))
    vmas = [count for count, _ in seen]
    assert vmas[0] == vmas[1] == vmas[2] <= vmas_before + 2
    dirty = [kb for _, kb in seen]
    assert dirty[2] - dirty[0] <= 16, dirty  # no growth beyond noise from the program itself

    again = engine.apply(target.pid, spec_for(bundles[3], trusted))
    assert again.result == "already"
    with pytest.raises(AssertionError):
        assert engine.apply(target.pid, spec_for(bundles[2], trusted)).result == "patched"
    assert target.behaviour() == patched(3)


def test_downgrade_is_refused_without_changes(start_target, bundles, trusted, engine):
    target = start_target(busy=1, sleepers=0)
    assert engine.apply(target.pid, spec_for(bundles[2], trusted)).result == "patched"
    result = engine.apply(target.pid, spec_for(bundles[1], trusted))
    assert result.result == "refused" and "lower than applied level 2" in result.reason
    assert target.behaviour() == patched(2)


def test_unload_restores_original_bytes(
    start_target, bundles, trusted, engine, fixture_build: FixtureBuild
):
    target = start_target(busy=2, sleepers=1)
    engine.apply(target.pid, spec_for(bundles[1], trusted))
    during = function_bytes(target.pid, fixture_build.library, FUNCTIONS)
    assert all(live != on_disk for live, on_disk in during.values())
    engine.apply(target.pid, spec_for(bundles[2], trusted))
    assert engine.revert(target.pid).result == "reverted"
    after = function_bytes(target.pid, fixture_build.library, FUNCTIONS)
    assert all(live == on_disk for live, on_disk in after.values())
    assert whole_text_matches_file(target.pid, fixture_build.library)


def test_a_level_replacing_fewer_functions_gives_the_others_their_original_code(
    start_target, bundles, trusted, engine, fixture_build: FixtureBuild
):
    target = start_target(busy=2, sleepers=1)
    assert engine.apply(target.pid, spec_for(bundles[3], trusted)).result == "patched"
    result = engine.apply(target.pid, spec_for(bundles[PARTIAL_LEVEL], trusted))
    assert result.result == "patched", result.reason
    assert target.behaviour() == patched(PARTIAL_LEVEL)
    (region,) = regions(target.pid)
    assert region.level == PARTIAL_LEVEL and region.functions == list(PARTIAL)
    now = function_bytes(target.pid, fixture_build.library, FUNCTIONS)
    assert [name for name, (live, on_disk) in now.items() if live != on_disk] == list(PARTIAL)
    assert engine.revert(target.pid).result == "reverted"
    assert target.behaviour() == ORIGINAL
    assert whole_text_matches_file(target.pid, fixture_build.library)


def test_sleepers_do_not_wake_early_and_signals_are_not_lost(
    start_target, bundles, trusted, engine
):
    target = start_target(busy=2, sleepers=4)
    sent = 0
    stop = threading.Event()
    rt_signal = signal.SIGRTMIN + 1

    def sender() -> None:
        nonlocal sent
        while not stop.is_set():
            os.kill(target.pid, rt_signal)
            sent += 1
            time.sleep(0.0005)

    before = target.stats()
    thread = threading.Thread(target=sender)
    thread.start()
    try:
        for _ in range(5):
            for level in (1, 2):
                assert (
                    engine.apply(target.pid, spec_for(bundles[level], trusted)).result == "patched"
                )
            assert engine.revert(target.pid).result == "reverted"
    finally:
        stop.set()
        thread.join()
    deadline = time.monotonic() + 5
    while target.stats()["signals"] < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    after = target.stats()
    assert after["signals"] == sent, (sent, after)
    assert after["early"] == before["early"] == 0
    assert after["errors"] == before["errors"] == 0
    assert after["sleeps"] > before["sleeps"]


def test_strict_mode_reports_busy_and_changes_nothing(
    start_target, bundles, trusted, tmp_path: Path
):
    # The reader thread sits in read() called from nsfix_wait_input: --strict must refuse.
    target = start_target(busy=0, sleepers=1)
    strict = Engine(EngineOptions(strict=True, attempts=4, lock_dir=tmp_path / "locks"))
    maps_before = maps_lines(target.pid)
    result = strict.apply(target.pid, spec_for(bundles[1], trusted))
    assert result.result == "busy", result.reason
    assert "nsfix_wait_input" in result.reason
    assert maps_lines(target.pid) == maps_before
    assert target.behaviour() == ORIGINAL
    assert result.level_after is None


def test_another_patcher_holding_the_process_means_busy(start_target, bundles, trusted, tmp_path):
    target = start_target(busy=1, sleepers=0)
    engine = Engine(EngineOptions(lock_dir=tmp_path / "locks"))
    with process_lock(target.pid, tmp_path / "locks"):
        result = engine.apply(target.pid, spec_for(bundles[1], trusted))
    assert result.result == "busy" and "another patcher" in result.reason
    assert nonstop_lines(target.pid) == []


def test_old_level_in_use_stays_until_nothing_returns_into_it(
    start_target, bundles, trusted, engine
):
    target = start_target(busy=0, sleepers=0)
    assert engine.apply(target.pid, spec_for(bundles[1], trusted)).result == "patched"
    # Let the reader loop once: it now blocks in read() called from level 1's code.
    assert target.ask("poke") == "1"
    time.sleep(0.2)
    fast = Engine(EngineOptions(attempts=3, lock_dir=engine.options.lock_dir))
    result = fast.apply(target.pid, spec_for(bundles[2], trusted))
    assert result.result == "patched", result.reason
    assert target.behaviour() == patched(2)
    levels = {r.level: r.state for r in regions(target.pid)}
    assert levels == {1: State.RETIRED, 2: State.ACTIVE}
    # Once the reader has left level 1's code, the next run unmaps it.
    assert target.ask("poke") == "1"
    time.sleep(0.2)
    assert fast.apply(target.pid, spec_for(bundles[2], trusted)).result == "already"
    assert [r.level for r in regions(target.pid)] == [2]
    assert clean(target.pid)


def test_target_exiting_mid_patch_is_gone_without_hanging(start_target, bundles, trusted, tmp_path):
    target = start_target(busy=2, sleepers=2)

    def kill_target(event: str, pid: int) -> None:
        if event == "stopped":
            os.kill(pid, signal.SIGKILL)

    engine = Engine(EngineOptions(lock_dir=tmp_path / "locks", hook=kill_target))
    started = time.monotonic()
    result = engine.apply(target.pid, spec_for(bundles[1], trusted))
    assert result.result == "gone", result
    assert time.monotonic() - started < 10
    target.process.wait(timeout=10)


def test_process_exiting_by_itself_during_many_patches(start_target, bundles, trusted, engine):
    """Short-lived targets racing the patcher: every result is patched or gone, never a hang."""
    outcomes = set()
    for _ in range(6):
        target = start_target(busy=1, sleepers=1)
        assert target.process.stdin is not None
        target.process.stdin.write("quit\n")
        target.process.stdin.flush()
        result = engine.apply(target.pid, spec_for(bundles[1], trusted))
        outcomes.add((result.result, result.reason if result.result != "gone" else ""))
        target.process.wait(timeout=10)
    assert {result for result, _ in outcomes} <= {"patched", "gone"}, outcomes


def test_wrong_build_id_is_refused_before_touching_the_process(bundles, trusted, engine):
    sleeper = __import__("subprocess").Popen(["sleep", "30"])
    try:
        result = engine.apply(sleeper.pid, spec_for(bundles[1], trusted))
        assert result.result == "refused"
        assert "does not map a file with build-id" in result.reason
        status = Path(f"/proc/{sleeper.pid}/status").read_text()
        assert "TracerPid:\t0" in status
    finally:
        sleeper.kill()
        sleeper.wait()


def test_threads_created_during_the_switch_are_caught(start_target, bundles, trusted, engine):
    # One thread keeps creating short-lived threads that call into the library.
    target = start_target(busy=1, sleepers=1, env={"NSFIX_CHURN": "1"})
    for _ in range(5):
        for level in (1, 2):
            result = engine.apply(target.pid, spec_for(bundles[level], trusted))
            assert result.result == "patched", result.reason
        assert engine.revert(target.pid).result == "reverted"
    assert target.alive() and target.behaviour() == ORIGINAL


def test_no_thread_without_seccomp_filter_means_refused(start_target, bundles, trusted, engine):
    target = start_target(busy=1, sleepers=1, env={"NSFIX_SECCOMP": "all"})
    result = engine.apply(target.pid, spec_for(bundles[1], trusted))
    assert result.result == "refused"
    assert "no thread without a seccomp filter" in result.reason
    assert nonstop_lines(target.pid) == []
    assert target.behaviour() == ORIGINAL


def test_library_deleted_by_an_upgrade_is_still_found(
    start_target, bundles, trusted, engine, fixture_build: FixtureBuild, tmp_path: Path
):
    copy = tmp_path / "old-install"
    copy.mkdir()
    for name in ("nsfix_prog", "libnsfix.so.1"):
        shutil.copy2(fixture_build.directory / name, copy / name)
    target = start_target(busy=1, sleepers=1, program=copy / "nsfix_prog")
    (copy / "libnsfix.so.1").unlink()  # what a package upgrade does to the old file
    assert any("libnsfix.so.1 (deleted)" in line for line in maps_lines(target.pid))
    spec = spec_for(bundles[1], trusted)
    assert target.pid in engine.processes_mapping(spec.build_id)
    assert engine.apply(target.pid, spec).result == "patched"
    assert target.behaviour() == patched(1)
