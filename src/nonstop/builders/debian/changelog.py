"""The ``debian/changelog`` entries between two versions, with the CVE ids and bugs each names.

An entry's text is read item by item (a ``*`` line and its continuation and
sub-items), so that a CVE id is paired with the ``Closes:`` of the item that
names it. The CVE ids are read by ``nonstop.cve.ids.cve_ids`` (shorthand such as
``CVE-2025-49794 and -49796`` included).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from debian.changelog import Changelog, ChangelogParseError
from debian.debian_support import Version

from nonstop.builders.errors import BuilderError
from nonstop.cve.ids import cve_ids

# Debian policy 4.4: the Closes: form dpkg and the BTS recognise.
CLOSES = re.compile(r"closes:\s*(?:bug)?#?\s?\d+(?:,\s*(?:bug)?#?\s?\d+)*", re.IGNORECASE)


def closed_bugs(text: str) -> list[int]:
    """The Debian bug numbers TEXT closes (``Closes: #NNN, #MMM``), in order."""
    bugs: list[int] = []
    for match in CLOSES.finditer(text):
        for number in re.findall(r"\d+", match.group(0)):
            if int(number) not in bugs:
                bugs.append(int(number))
    return bugs


@dataclass(frozen=True)
class Item:
    """One ``*`` item of an entry: its text, the CVE ids it names and the bugs it closes."""

    text: str
    cves: tuple[str, ...]
    closes: tuple[int, ...]


@dataclass(frozen=True)
class Entry:
    """One changelog entry (one upload)."""

    version: str
    urgency: str
    distribution: str
    date: str
    items: tuple[Item, ...]

    @property
    def cves(self) -> list[str]:
        return list(dict.fromkeys(cve for item in self.items for cve in item.cves))

    @property
    def closes(self) -> list[int]:
        return list(dict.fromkeys(bug for item in self.items for bug in item.closes))


def _items(lines: list[str]) -> tuple[Item, ...]:
    texts: list[list[str]] = []
    for line in lines:
        stripped = line.strip()
        if not stripped or (stripped.startswith("[") and stripped.endswith("]")):
            continue  # blank lines and "[ Maintainer Name ]" group headers
        if stripped.startswith("* ") or not texts:
            texts.append([])
        texts[-1].append(stripped)
    return tuple(
        Item(joined, tuple(cve_ids(joined)), tuple(closed_bugs(joined)))
        for joined in (" ".join(text) for text in texts)
    )


def entries_between(changelog: Path, old: str, new: str) -> tuple[list[Entry], bool]:
    """The entries of CHANGELOG after version OLD up to and including NEW, oldest first.

    "After" is by Debian version order, so an entry for OLD itself need not be
    in the file; the second value says whether it is (if not, OLD comes from
    another branch than NEW). A BuilderError if the file cannot be read or
    parsed, if NEW is not newer than OLD, or if the file's newest entry is not NEW.
    """
    if Version(new) <= Version(old):
        raise BuilderError(f"--to {new} is not newer than --from {old}")
    try:
        with warnings.catch_warnings():  # old entries' oddities (dates, trailers) are not ours
            warnings.simplefilter("ignore")
            parsed = Changelog(changelog.read_text(errors="replace"), strict=False)
    except (OSError, ChangelogParseError) as exc:
        raise BuilderError(f"cannot read {changelog}: {exc}") from None
    blocks = list(parsed)
    if not blocks or blocks[0].version != Version(new):
        top = blocks[0].version if blocks else "no entry"
        raise BuilderError(f"{changelog}'s newest entry is {top}, not {new}")
    entries = [
        Entry(
            version=str(block.version),
            urgency=block.urgency or "",
            distribution=block.distributions or "",
            date=block.date or "",
            items=_items(block.changes()),
        )
        for block in reversed(blocks)
        if Version(old) < block.version <= Version(new)
    ]
    return entries, any(block.version == Version(old) for block in blocks)
