"""Finding the tasks that block a transition, from /proc/*/task/*/patch_state (host only).

The /proc tree here is laid out by hand because a running transition cannot
exist on the host (no module loading); the guest suite checks the same code
against the real kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.kernel.tasks import BlockingTask, blocking_tasks, parse_patch_state, parse_stack

STACK = """[<0>] nonstop_hold_wait+0x8a/0xd0 [nonstop_holdtarget]
[<0>] hold_show+0xf/0x2d [nonstop_holdtarget]
[<0>] seq_read_iter+0x122/0x450
"""


def make_task(proc: Path, pid: int, tid: int, comm: str, state: str, stack: str | None) -> None:
    directory = proc / str(pid) / "task" / str(tid)
    directory.mkdir(parents=True)
    (directory / "patch_state").write_text(state)
    (directory / "comm").write_text(comm + "\n")
    if stack is not None:
        (directory / "stack").write_text(stack)


@pytest.mark.parametrize(
    ("text", "value"), [("-1\n", -1), ("0\n", 0), ("1", 1), ("2\n", None), ("x", None), ("", None)]
)
def test_parse_patch_state(text: str, value: int | None) -> None:
    assert parse_patch_state(text) == value


def test_parse_stack_drops_addresses() -> None:
    assert parse_stack(STACK) == (
        "nonstop_hold_wait+0x8a/0xd0 [nonstop_holdtarget]",
        "hold_show+0xf/0x2d [nonstop_holdtarget]",
        "seq_read_iter+0x122/0x450",
    )
    assert parse_stack("") == ()


def test_blocking_tasks_when_patching(tmp_path: Path) -> None:
    make_task(tmp_path, 10, 10, "switched", "1\n", "")
    make_task(tmp_path, 20, 20, "cat", "0\n", STACK)
    make_task(tmp_path, 30, 31, "worker", "0\n", None)  # stack unreadable
    make_task(tmp_path, 40, 40, "idle", "-1\n", "")
    (tmp_path / "self").mkdir()  # not a pid directory
    found = blocking_tasks(1, tmp_path)
    assert [(t.pid, t.tid, t.comm) for t in found] == [(20, 20, "cat"), (30, 31, "worker")]
    assert found[0].describe() == "cat (pid 20) in nonstop_hold_wait+0x8a/0xd0 [nonstop_holdtarget]"
    assert found[1].describe() == "worker (pid 30/31)"
    assert found[1].to_dict()["stack"] == []


def test_blocking_tasks_when_unpatching(tmp_path: Path) -> None:
    make_task(tmp_path, 10, 10, "still-new", "1\n", "")
    make_task(tmp_path, 20, 20, "back", "0\n", "")
    assert [t.comm for t in blocking_tasks(0, tmp_path)] == ["still-new"]


def test_no_transition_means_no_blockers() -> None:
    # On the real host /proc, no livepatch transition runs: every task is -1 (or no file).
    assert blocking_tasks(1) == []
    assert isinstance(BlockingTask(1, 1, "x", 0, ()).describe(), str)
