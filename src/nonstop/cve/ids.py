"""CVE ids: the strict form one id must have, and the ids a free text names.

A CVE id is ``CVE-YYYY-NNNN...`` (four or more digits after the year). Texts
written by people (changelog entries, patch headers) name several ids of one
year in a shorthand: ``CVE-2025-49794 and -49796``, ``CVE-2025-1, -2``; the
shorthand names ``CVE-2025-49796`` too. The Debian builder reads changelogs and
patches with this module, and the feeds read changelogs and OSV aliases with it.
"""

from __future__ import annotations

import re

_MENTION = re.compile(r"CVE-(\d{4})-(\d{4,})((?:\s*(?:,|and|&)\s*-\d{4,}\b)*)")
_SHORTHAND = re.compile(r"-(\d{4,})")
# CVE numbers are at most a handful of digits; the bound keeps junk out of keys and indexes.
_STRICT = re.compile(r"CVE-\d{4}-\d{4,19}")


def is_cve_id(text: str) -> bool:
    """Whether TEXT is exactly one CVE id (``CVE-2024-50602``), nothing around it."""
    return _STRICT.fullmatch(text) is not None


def cve_ids(text: str) -> list[str]:
    """The CVE ids TEXT names, in order of first mention, shorthand included (module docstring)."""
    found: list[str] = []
    for match in _MENTION.finditer(text):
        year = match.group(1)
        for number in [match.group(2), *_SHORTHAND.findall(match.group(3))]:
            cve = f"CVE-{year}-{number}"
            if cve not in found:
                found.append(cve)
    return found
