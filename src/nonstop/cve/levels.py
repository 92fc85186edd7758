"""Published live patch levels by target: which level first closes each CVE.

Levels are cumulative: level N closes the CVEs of levels 1..N, whether or not
its own list repeats them. So a CVE is closed on a target at applied level A
when the first level naming it is at most A.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from nonstop.bundle import UserspaceTarget
from nonstop.cve.model import LivePatchLevel


class LevelError(ValueError):
    """Two different records for one target and level."""


@lru_cache(maxsize=65536)
def library_target(build_id: str) -> str:
    """The bundle target key of the library with BUILD_ID."""
    return UserspaceTarget(build_id=build_id, soname="").key


class PublishedLevels:
    """Every published level, by target key."""

    def __init__(self, levels: Iterable[LivePatchLevel]) -> None:
        numbered: dict[str, dict[int, LivePatchLevel]] = {}
        for level in levels:
            same = numbered.setdefault(level.target_key, {}).setdefault(level.level, level)
            if same != level:
                raise LevelError(
                    f"two different records for level {level.level} of {level.target_key}"
                )
        self._numbered = numbered
        self._first: dict[str, dict[str, LivePatchLevel]] = {}
        for target, by_number in numbered.items():
            first = self._first[target] = {}
            for number in sorted(by_number):
                for cve in by_number[number].cves:
                    first.setdefault(cve, by_number[number])

    def has(self, target: str) -> bool:
        """Whether any level of TARGET is published."""
        return target in self._first

    def cves(self, target: str) -> Iterable[str]:
        """Every CVE a published level of TARGET closes."""
        return self._first.get(target, {}).keys()

    def first_closing(self, target: str, cve: str) -> LivePatchLevel | None:
        """The lowest published level of TARGET that closes CVE."""
        first = self._first.get(target)
        return None if first is None else first.get(cve)

    def closes(self, target: str, applied: int | None, cve: str) -> bool:
        """Whether level APPLIED of TARGET closes CVE (levels 1..APPLIED named it)."""
        first = self.first_closing(target, cve)
        return first is not None and applied is not None and first.level <= applied

    def level(self, target: str, number: int) -> LivePatchLevel | None:
        """Level NUMBER of TARGET, if published."""
        return self._numbered.get(target, {}).get(number)
