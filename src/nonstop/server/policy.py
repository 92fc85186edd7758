"""Feed policy: which bundle (if any) a host should apply for one of its targets.

Inputs: the published bundles of that target, the delay (a bundle is visible
DELAY hours after publication: the larger of the feed's and the host's own),
an optional sticky pin (``level:N``: never above level N; ``date:YYYY-MM-DD``:
only bundles published on or before that day, UTC; several pins combine into
the strictest, see ``strictest``), and the level the host reports as applied.
Levels are cumulative, so the answer is the highest visible, allowed level, and
only when it is above what the host has; with it, the higher levels the pin
allows that the delay still holds back, each with its release time, so a host
can say what is coming and when. Nothing here touches the database.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal

_STICKY = re.compile(r"^(level:[1-9][0-9]{0,8}|date:[0-9]{4}-[0-9]{2}-[0-9]{2})$")


@dataclass(frozen=True)
class Sticky:
    """A parsed pin; a None bound does not restrict."""

    max_level: int | None = None
    # Bundles published before this instant (the end of the pinned day) are allowed.
    published_before: datetime | None = None


@lru_cache(maxsize=1024)  # a fleet has few distinct pins, and every check-in parses one
def parse_sticky(value: str | None) -> Sticky | None:
    """``level:N`` or ``date:YYYY-MM-DD`` into a Sticky; ValueError with a one-line reason."""
    if value is None:
        return None
    if not _STICKY.match(value):
        raise ValueError(f"sticky pin {value!r} is not level:N or date:YYYY-MM-DD")
    kind, _, arg = value.partition(":")
    if kind == "level":
        return Sticky(max_level=int(arg))
    try:
        day = date.fromisoformat(arg)
    except ValueError:
        raise ValueError(f"sticky pin {value!r} names no real date") from None
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return Sticky(published_before=end)


def strictest(*pins: Sticky | None) -> Sticky | None:
    """One pin allowing only what every given pin allows: the lowest level, the earliest day."""
    levels = [pin.max_level for pin in pins if pin and pin.max_level is not None]
    days = [pin.published_before for pin in pins if pin and pin.published_before is not None]
    if not levels and not days:
        return None
    return Sticky(min(levels, default=None), min(days, default=None))


@dataclass(frozen=True)
class Candidate:
    """A published (not retired) bundle of one target."""

    sha256: str
    level: int
    size: int
    published_at: datetime
    effective_version: str


@dataclass(frozen=True)
class Held:
    """A published level the pin allows that the delay still holds back, and when it is due."""

    level: int
    published_at: datetime
    release_at: datetime


@dataclass(frozen=True)
class Decision:
    """The answer for one target: ``apply`` BUNDLE or ``none``; REASON says why, in one
    line, for whoever reads the host's answer.
    """

    action: Literal["apply", "none"]
    reason: str
    bundle: Candidate | None = None
    held: tuple[Held, ...] = ()
    """Levels above the offer (and above the applied level) that the delay holds back."""


def _held(
    candidates: Sequence[Candidate],
    sticky: Sticky | None,
    delay: timedelta,
    above: int,
    now: datetime,
) -> tuple[Held, ...]:
    """Levels above ABOVE still inside the delay that the pin allows, lowest first."""
    return tuple(
        Held(c.level, c.published_at, c.published_at + delay)
        for c in sorted(candidates, key=lambda c: c.level)
        if c.level > above
        and c.published_at > now - delay
        and (sticky is None or sticky.max_level is None or c.level <= sticky.max_level)
        and (
            sticky is None
            or sticky.published_before is None
            or c.published_at < sticky.published_before
        )
    )


def decide(
    candidates: Sequence[Candidate],
    *,
    delay_hours: int,
    sticky: Sticky | None,
    applied_level: int | None,
    now: datetime,
) -> Decision:
    """The bundle to apply for one target, or "none" with the reason."""
    if not candidates:
        return Decision("none", "no bundle for this target")
    visible_before = now - timedelta(hours=delay_hours)
    allowed = [
        c
        for c in candidates
        if c.published_at <= visible_before
        and (sticky is None or sticky.max_level is None or c.level <= sticky.max_level)
        and (
            sticky is None
            or sticky.published_before is None
            or c.published_at < sticky.published_before
        )
    ]
    delay = timedelta(hours=delay_hours)
    if not allowed:
        pinned = sticky is not None and any(c.published_at <= visible_before for c in candidates)
        held = _held(candidates, sticky, delay, applied_level or 0, now)
        return Decision(
            "none", "held back by sticky pin" if pinned else "not yet released on feed", held=held
        )
    best = max(allowed, key=lambda c: c.level)
    held = _held(candidates, sticky, delay, max(best.level, applied_level or 0), now)
    if applied_level is not None and best.level <= applied_level:
        reason = "up to date" if best.level == applied_level else "applied level is above policy"
        return Decision("none", reason, held=held)
    return Decision("apply", f"level {best.level} available", best, held)
