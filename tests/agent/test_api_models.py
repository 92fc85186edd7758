"""The server's answers are checked field by field before the agent acts on them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nonstop.agent.api_models import CheckinAnswer, MalformedAnswer, Registration
from nonstop.agent.online import choose

SHA = "c9" * 32
GOOD: dict[str, Any] = {
    "host_id": "1f" * 16,
    "checkin_id": "0b5e8f4e-6d1c-4f0a-9b7e-2c3d4e5f6a7b",
    "recorded": True,
    "feed": "stable",
    "server_time": "2026-11-26T07:29:50.713690Z",
    "next_checkin_seconds": 3600,
    "targets": [
        {
            "target": "userspace:" + "4f" * 20,
            "kind": "userspace",
            "name": "libexpat.so.1",
            "applied_level": 2,
            "action": "apply",
            "reason": "level 3 available",
            "bundle": {
                "sha256": SHA,
                "level": 3,
                "size": 3067,
                "effective_version": "2.5.0-1+deb12u1+ns3",
                "url": f"/api/v1/bundles/{SHA}",
                "published_at": "2026-11-20T10:00:00Z",
            },
        },
        {
            "target": "kernel:6.1.0-28-amd64:" + "a1" * 20,
            "kind": "kernel",
            "name": "6.1.0-28-amd64",
            "applied_level": None,
            "action": "none",
            "reason": "no bundle for this target",
            "bundle": None,
        },
    ],
}


def test_a_valid_answer_is_read() -> None:
    answer = CheckinAnswer.parse(GOOD)
    offer, kernel = answer.targets
    assert offer.build_id == "4f" * 20 and kernel.build_id is None
    assert offer.bundle is not None and offer.bundle.level == 3
    assert offer.bundle.published_at is not None and offer.bundle.published_at.year == 2026
    older = copy.deepcopy(GOOD)
    del older["targets"][0]["bundle"]["published_at"]  # servers before delayed feeds
    assert CheckinAnswer.parse(older).targets[0].bundle.published_at is None  # type: ignore[union-attr]


def test_levels_the_feed_holds_back_are_read_and_shown_with_their_release_time() -> None:
    """The server names what its feed's delay holds back; the host shows it, never applies it."""
    document = copy.deepcopy(GOOD)
    document["targets"][1]["held_back"] = [
        {"level": 1, "published_at": "2026-11-26T06:00:00Z", "release_at": "2026-11-27T06:00:00Z"}
    ]
    answer = CheckinAnswer.parse(document)
    (held,) = answer.targets[1].held_back
    assert (held.level, held.release_at) == (1, datetime(2026, 11, 27, 6, tzinfo=UTC))
    choice = choose(
        answer, kernel_supported=True, userspace_enabled=True,
        sticky=None, delay_hours=0, now=datetime(2026, 11, 26, 8, tzinfo=UTC),
    )  # fmt: skip
    (hold,) = choice.held
    assert hold.to_dict() == {
        "target": document["targets"][1]["target"], "name": "6.1.0-28-amd64", "level": 1,
        "reason": "not yet released on feed stable", "until": "2026-11-27T06:00:00+00:00",
    }  # fmt: skip
    assert [d.bundle.level for d in choice.offers] == [3]  # type: ignore[union-attr]
    assert CheckinAnswer.parse(GOOD).targets[1].held_back == ()  # older servers: none


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(GOOD)
    node = document
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["targets"], KeyError, "'targets' is missing"),
        (["targets"], {"a": 1}, "'targets' is not a list"),
        (["recorded"], "yes", "'recorded' is not a bool"),
        (["next_checkin_seconds"], True, "not a int"),
        (["server_time"], "yesterday", "ISO 8601"),
        (["targets", 0, "kind"], "firmware", "unknown target kind"),
        (["targets", 0, "action"], "reboot", "unknown action"),
        (["targets", 0, "bundle"], None, "'apply' decision without a bundle"),
        (["targets", 0, "bundle", "sha256"], "../../etc/passwd", "not a SHA-256"),
        (["targets", 0, "bundle", "url"], "http://elsewhere/x.nsb", "not a bundle download"),
        (["targets", 0, "bundle", "level"], "3", "'level' is not a int"),
        (["targets", 1], "kernel", "expected a JSON object"),
        (["targets", 1, "held_back"], {"level": 2}, "'held_back' is not a list"),
        (["targets", 1, "held_back"], [{"level": 2}], "'release_at' is missing"),
        (
            ["targets", 1, "held_back"],
            [{"level": "2", "release_at": "2026-11-27T00:00:00Z"}],
            "'level' is not a int",
        ),
    ],
)
def test_malformed_answers_are_refused(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(MalformedAnswer, match=message):
        CheckinAnswer.parse(_broken(path, value))


def test_registration_answer() -> None:
    good = {"host_id": "1f" * 16, "token": "nsh_x", "feed": "test", "checkin_interval_seconds": 60}
    assert Registration.parse(good).host_id == "1f" * 16
    with pytest.raises(MalformedAnswer, match="not a host id"):
        Registration.parse({**good, "host_id": "../admin"})
    with pytest.raises(MalformedAnswer, match="JSON object"):
        Registration.parse([good])


@pytest.mark.parametrize(
    ("sticky", "delay_hours", "held"),
    [
        (None, 0, None),
        ("level:2", 0, "sticky pin level:2"),
        ("level:3", 0, None),
        ("date:2026-11-19", 0, "sticky pin date:2026-11-19"),
        ("date:2026-11-20", 0, None),
        (None, 24 * 7, "update_delay_hours = 168"),
        (None, 24, None),
    ],
)
def test_the_local_policy_holds_back_what_a_server_offers_beyond_it(
    sticky: str | None, delay_hours: int, held: str | None
) -> None:
    """A server that ignores the host's pin or delay still cannot push a level past them."""
    now = datetime(2026, 11, 22, tzinfo=UTC)  # the offer was published two days earlier
    choice = choose(
        CheckinAnswer.parse(GOOD), kernel_supported=True, userspace_enabled=True,
        sticky=sticky, delay_hours=delay_hours, now=now,
    )  # fmt: skip
    if held is None:
        assert [d.bundle.level for d in choice.offers] == [3] and choice.held == []  # type: ignore[union-attr]
    else:
        (hold,) = choice.held
        assert choice.offers == [] and held in hold.reason
        if delay_hours:  # held until the publication time plus the local delay
            assert hold.until == datetime(2026, 11, 20, 10, tzinfo=UTC) + timedelta(
                hours=delay_hours
            )


def test_userspace_offers_are_ignored_when_userspace_patching_is_off() -> None:
    choice = choose(
        CheckinAnswer.parse(GOOD), kernel_supported=True, userspace_enabled=False,
        sticky=None, delay_hours=0, now=datetime(2026, 11, 22, tzinfo=UTC),
    )  # fmt: skip
    ((_, reason),) = choice.ignored
    assert choice.offers == [] and "disabled" in reason
