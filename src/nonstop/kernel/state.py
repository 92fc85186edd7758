"""The kernel area's state document (``kernel.json`` in the agent's state dir).

- ``current``: the level applied and confirmed healthy (what ``--uname`` reports);
- ``wanted``: the level the operator asked for last, re-applied at boot;
- ``pending``: a level being applied and not yet confirmed (see ``guard``);
- ``blocked``: levels the crash-loop guard keeps from loading again.

Levels are named by their bundle's SHA-256, so the agent can find the exact
verified bundle again in its cache.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATE_NAME = "kernel"


@dataclass(frozen=True)
class LevelRef:
    level: int
    bundle_sha256: str
    module: str
    effective_version: str

    def describe(self) -> str:
        return f"level {self.level} ({self.module})"


@dataclass(frozen=True)
class Pending:
    ref: LevelRef
    boot_id: str
    started: str


@dataclass(frozen=True)
class Blocked:
    ref: LevelRef
    reason: str
    since: str


@dataclass
class KernelState:
    current: LevelRef | None = None
    wanted: LevelRef | None = None
    pending: Pending | None = None
    blocked: list[Blocked] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> KernelState:
        def ref(value: Any) -> LevelRef | None:
            return LevelRef(**value) if value else None

        pending = document.get("pending")
        return cls(
            current=ref(document.get("current")),
            wanted=ref(document.get("wanted")),
            pending=(
                Pending(LevelRef(**pending["ref"]), pending["boot_id"], pending["started"])
                if pending
                else None
            ),
            blocked=[
                Blocked(LevelRef(**item["ref"]), item["reason"], item["since"])
                for item in document.get("blocked", [])
            ],
        )
