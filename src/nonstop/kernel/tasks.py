"""Which tasks hold up a livepatch transition, read from /proc/*/task/*/patch_state.

During a transition every task carries a patch state: 0 (still on the old
code), 1 (switched to the new code), or -1 when no transition is running.
A task blocks the transition while its state differs from the target (1 when
patching, 0 when unpatching): the kernel found a to-be-patched function on its
stack. Its kernel stack, readable by root, shows where it sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNDEFINED = -1


@dataclass(frozen=True)
class BlockingTask:
    """A thread whose patch state was not yet the target when /proc was read."""

    pid: int
    tid: int
    comm: str
    patch_state: int
    stack: tuple[str, ...]
    """Kernel stack frames (``func+0x1a/0x40 [module]``); empty when unreadable."""

    def describe(self) -> str:
        """One line for messages: ``comm (pid P[/TID]) in <top stack frame>``."""
        where = f" in {self.stack[0]}" if self.stack else ""
        thread = f"/{self.tid}" if self.tid != self.pid else ""
        return f"{self.comm} (pid {self.pid}{thread}){where}"

    def to_dict(self) -> dict[str, object]:
        """The task in the ``blocking_tasks`` list of the agent's ``--json`` output."""
        return {
            "pid": self.pid,
            "tid": self.tid,
            "comm": self.comm,
            "patch_state": self.patch_state,
            "stack": list(self.stack),
        }


def parse_patch_state(text: str) -> int | None:
    """The integer in a patch_state file, or None if it holds anything else."""
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value in (UNDEFINED, 0, 1) else None


def parse_stack(text: str) -> tuple[str, ...]:
    """Frames of a /proc/PID/task/TID/stack file, without the ``[<0>]`` address prefixes."""
    frames = []
    for line in text.splitlines():
        frame = line.split("] ", 1)[1] if line.startswith("[<") and "] " in line else line
        if frame.strip():
            frames.append(frame.strip())
    return tuple(frames)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # the task exited, or the file is not readable by us
        return None


def blocking_tasks(target_state: int, proc: Path = Path("/proc")) -> list[BlockingTask]:
    """Tasks whose patch state is not yet TARGET_STATE (1 when patching, 0 when unpatching)."""
    found = []
    for task_dir in proc.glob("[0-9]*/task/[0-9]*"):
        state_text = _read(task_dir / "patch_state")
        state = parse_patch_state(state_text) if state_text is not None else None
        if state is None or state in (UNDEFINED, target_state):
            continue
        comm = (_read(task_dir / "comm") or "?").strip()
        stack = parse_stack(_read(task_dir / "stack") or "")
        pid = int(task_dir.parent.parent.name)
        found.append(BlockingTask(pid, int(task_dir.name), comm, state, stack))
    return sorted(found, key=lambda task: (task.pid, task.tid))
