"""The kernel area's state document (``kernel.json`` in the agent's state dir).

- ``current``: the level applied and confirmed healthy (what ``--uname`` reports);
- ``wanted``: the level the operator asked for last, re-applied at boot;
- ``pending``: a level being applied and not yet confirmed (see ``guard``);
- ``blocked``: levels the crash-loop guard keeps from loading again;
- ``held``: the level the operator unloaded: it and lower levels stay out of
  automatic updates until the operator applies a level again or a higher one
  is offered.

Levels are named by their bundle's SHA-256, so the agent can find the exact
verified bundle again in its cache.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATE_NAME = "kernel"


@dataclass(frozen=True)
class LevelRef:
    """One kernel level as the agent records it.

    BUNDLE_SHA256 names the exact verified bundle in the agent's cache, MODULE
    the livepatch module (and sysfs directory) it loads as, EFFECTIVE_VERSION
    what ``--uname`` reports while it is applied.
    """

    level: int
    bundle_sha256: str
    module: str
    effective_version: str

    def describe(self) -> str:
        """The level as messages name it: ``level N (module)``."""
        return f"level {self.level} ({self.module})"


@dataclass(frozen=True)
class Pending:
    """REF is being applied; BOOT_ID is the boot it started in, STARTED a UTC ``...Z`` timestamp."""

    ref: LevelRef
    boot_id: str
    started: str


@dataclass(frozen=True)
class Blocked:
    """The guard keeps REF from loading; REASON is one line for the operator, SINCE UTC."""

    ref: LevelRef
    reason: str
    since: str


@dataclass
class KernelState:
    """The whole ``kernel.json`` document; the agent changes it only under the state lock."""

    current: LevelRef | None = None
    wanted: LevelRef | None = None
    pending: Pending | None = None
    blocked: list[Blocked] = field(default_factory=list)
    held: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: each level an object of LevelRef fields, or null; see from_dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> KernelState:
        """The state a to_dict document holds; an empty document is the initial state.

        A document of another shape raises KeyError or TypeError: it is the
        agent's own root-only file, not validated further.
        """

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
            held=document.get("held"),
        )
