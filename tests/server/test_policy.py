"""Feed policy in isolation: delay, sticky pins by level and by date, applied levels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nonstop.server.policy import Candidate, Sticky, decide, parse_sticky, strictest

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def candidate(level: int, published: datetime) -> Candidate:
    return Candidate(f"{level:064x}", level, 100, published, f"v{level}")


# Level 1 on 1 March, level 2 on 9 March 12:00, level 3 one hour ago.
CANDIDATES = [
    candidate(1, datetime(2026, 3, 1, tzinfo=UTC)),
    candidate(2, datetime(2026, 3, 9, 12, 0, tzinfo=UTC)),
    candidate(3, NOW - timedelta(hours=1)),
]


def chosen(delay: int = 0, sticky: str | None = None, applied: int | None = None) -> int | None:
    decision = decide(
        CANDIDATES, delay_hours=delay, sticky=parse_sticky(sticky), applied_level=applied, now=NOW
    )
    return decision.bundle.level if decision.bundle else None


def test_newest_visible_level_wins() -> None:
    assert chosen() == 3
    assert chosen(delay=2) == 2
    assert chosen(delay=24) == 2  # published exactly 24 h ago: visible
    assert chosen(delay=25) == 1
    assert chosen(delay=24 * 30) is None


def test_sticky_level_and_date() -> None:
    assert chosen(sticky="level:2") == 2
    assert chosen(sticky="level:1") == 1
    assert chosen(sticky="date:2026-03-09") == 2  # the whole pinned day counts
    assert chosen(sticky="date:2026-03-08") == 1
    assert chosen(sticky="date:2026-02-28") is None
    assert chosen(sticky="level:2", delay=25) == 1


def test_applied_level_decides_between_apply_and_none() -> None:
    assert chosen(applied=2) == 3
    up_to_date = decide(CANDIDATES, delay_hours=0, sticky=None, applied_level=3, now=NOW)
    assert (up_to_date.action, up_to_date.reason) == ("none", "up to date")
    pinned_below = decide(
        CANDIDATES, delay_hours=0, sticky=Sticky(max_level=1), applied_level=3, now=NOW
    )
    assert (pinned_below.action, pinned_below.reason) == ("none", "applied level is above policy")


def test_no_candidates() -> None:
    decision = decide([], delay_hours=0, sticky=None, applied_level=None, now=NOW)
    assert (decision.action, decision.reason) == ("none", "no bundle for this target")


@pytest.mark.parametrize("text", ["level:0", "level:x", "date:2026-02-30", "latest", "level:", ""])
def test_bad_pins_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="sticky pin"):
        parse_sticky(text)


def test_several_pins_combine_into_the_strictest() -> None:
    level2, day = parse_sticky("level:2"), parse_sticky("date:2026-03-08")
    assert strictest(None, None) is None
    assert strictest(level2, None) == level2
    assert strictest(parse_sticky("level:3"), level2) == level2
    assert strictest(parse_sticky("date:2026-03-09"), day) == day
    both = strictest(level2, day)
    assert both is not None and (both.max_level, both.published_before) == (
        2,
        datetime(2026, 3, 9, tzinfo=UTC),
    )
    # Level 2 was published on 9 March: the date pin of 8 March holds it back too.
    assert (
        decide(CANDIDATES, delay_hours=0, sticky=both, applied_level=None, now=NOW).bundle
        == (CANDIDATES[0])
    )


def held(
    delay: int, sticky: str | None = None, applied: int | None = None
) -> list[tuple[int, datetime]]:
    decision = decide(
        CANDIDATES, delay_hours=delay, sticky=parse_sticky(sticky), applied_level=applied, now=NOW
    )
    return [(h.level, h.release_at) for h in decision.held]


def test_levels_the_delay_holds_back_come_with_their_release_time() -> None:
    """What the feed's delay hides is named, with when it is released (the stable feed's 24 h)."""
    level2_at, level3_at = CANDIDATES[1].published_at, CANDIDATES[2].published_at
    assert held(0) == []  # everything is visible: level 3 is offered
    assert held(2) == [(3, level3_at + timedelta(hours=2))]  # level 2 offered, 3 held
    assert held(25) == [
        (2, level2_at + timedelta(hours=25)),
        (3, level3_at + timedelta(hours=25)),
    ]
    assert held(24 * 30)[0][0] == 1  # nothing offered: every level is held, lowest first
    # Only levels above what the host runs, and only those the pin will allow when released.
    assert held(25, applied=2) == [(3, level3_at + timedelta(hours=25))]
    assert held(25, sticky="level:2") == [(2, level2_at + timedelta(hours=25))]
    assert held(25, sticky="date:2026-03-08") == []
