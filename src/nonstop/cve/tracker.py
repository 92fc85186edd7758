"""The Debian security tracker's JSON: every source package's CVEs, per Debian release.

The document (the tracker's ``data/json``) is ``{source: {issue: {"description",
"scope", "debianbug", "releases": {codename: {"status", "repositories",
"fixed_version", "urgency", "nodsa", "nodsa_reason", "next_point_update"}}}}}``;
the tracker leaves out the fields it has no value for. Per release:

- ``resolved`` with ``fixed_version`` ``0``: the release never had the flaw (NOT_AFFECTED);
- ``resolved`` with a version: FIXED in that version;
- ``open``: OPEN, with the ``nodsa`` text and reason when the tracker says no DSA will come;
- ``undetermined``: UNDETERMINED.

Issues named ``TEMP-...`` have no CVE id yet and are skipped; so are releases
whose codename is not a Debian release (``sid``, ``experimental``) and, when
the caller asks for some releases only, the others. Every entry is checked
before anything is returned (versions with ``nonstop.cve.versions``): one
malformed entry refuses the whole document.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Any

from nonstop.cve import versions
from nonstop.cve.batch import PACKAGE_NAME, FeedBatch, batch, urgency
from nonstop.cve.errors import FeedError, Malformed, place, shown
from nonstop.cve.ids import is_cve_id
from nonstop.cve.model import DEBIAN_CODENAMES, Advisory, FeedState, release_key

FEED = "debian-tracker"
LABEL = "tracker JSON"
"""How errors name this feed."""

_RELEASES = {codename: release_key("debian", codename) for codename in DEBIAN_CODENAMES}
_STATES = {"open": FeedState.OPEN, "undetermined": FeedState.UNDETERMINED}
_TEXT_FIELDS = ("urgency", "nodsa", "nodsa_reason")


def parse_tracker(document: object, releases: Collection[str] | None = None) -> FeedBatch:
    """The advisories of a decoded tracker DOCUMENT (module docstring), for RELEASES
    (``release_key`` form, e.g. ``debian:12``) or all Debian releases; FeedError if malformed."""
    if not isinstance(document, dict):
        raise FeedError("the document is not an object of source packages", feed=LABEL)
    wanted = None if releases is None else frozenset(releases)
    skipped: Counter[str] = Counter()
    advisories: list[Advisory] = []
    records = 0
    for source, issues in document.items():
        if not PACKAGE_NAME.fullmatch(source):
            raise FeedError("not a Debian source package name", feed=LABEL, where=place(source))
        if not isinstance(issues, dict):
            raise FeedError("not an object of issues", feed=LABEL, where=place(source))
        for issue, entry in issues.items():
            records += 1
            if not is_cve_id(issue):
                if not issue.startswith("TEMP-"):
                    raise FeedError("not a CVE or TEMP id", feed=LABEL, where=place(source, issue))
                skipped["TEMP ids (no CVE yet)"] += 1
                continue
            advisories.extend(_issue(source, issue, entry, wanted, skipped))
    return batch(FEED, advisories, records, skipped)


def _issue(
    source: str, cve: str, entry: object, wanted: frozenset[str] | None, skipped: Counter[str]
) -> list[Advisory]:
    if not isinstance(entry, dict):
        raise FeedError("not an object", feed=LABEL, where=place(source, cve))
    description = entry.get("description")
    if description is not None and not isinstance(description, str):
        raise FeedError("description is not text", feed=LABEL, where=place(source, cve))
    per_release = entry.get("releases", {})
    if not isinstance(per_release, dict):
        raise FeedError("releases is not an object", feed=LABEL, where=place(source, cve))
    found = []
    for codename, state in per_release.items():
        release = _RELEASES.get(codename)
        if release is None:
            skipped["entries of suites that are no release (sid, experimental)"] += 1
        elif wanted is not None and release not in wanted:
            skipped["entries of releases not asked for"] += 1
            release = None
        try:  # every entry is checked, those skipped too
            advisory = _release(source, cve, release, state, description)
        except Malformed as exc:
            raise FeedError(str(exc), feed=LABEL, where=place(source, cve, codename)) from None
        if advisory is not None:
            found.append(advisory)
    return found


def _release(
    source: str, cve: str, release: str | None, state: object, description: str | None
) -> Advisory | None:
    """The advisory of one release entry, checked (Malformed); None when RELEASE is (an entry
    that is skipped)."""
    if not isinstance(state, dict):
        raise Malformed("not an object")
    if not {type(state.get(name, "")) for name in _TEXT_FIELDS} <= {str}:
        wrong = next(name for name in _TEXT_FIELDS if not isinstance(state.get(name, ""), str))
        raise Malformed(f"{wrong} is not text")
    repositories = state.get("repositories", {})
    if type(repositories) is not dict or not set(map(type, repositories.values())) <= {str}:
        raise Malformed("repositories is not an object of versions")
    status = state.get("status")
    fixed = state.get("fixed_version")
    if status == "resolved":
        if not isinstance(fixed, str):
            raise Malformed("resolved without a fixed_version")
        try:
            versions.debian_version(fixed)
        except versions.VersionError:
            raise Malformed(f"fixed_version {shown(fixed)} is not a Debian version") from None
        feed_state = FeedState.NOT_AFFECTED if fixed == "0" else FeedState.FIXED
    elif isinstance(status, str) and status in _STATES:
        feed_state, fixed = _STATES[status], None
    else:
        raise Malformed(f"status {shown(status)} is not resolved, open or undetermined")
    word = urgency(state.get("urgency"))
    if release is None:
        return None
    return Advisory(
        cve=cve,
        source=source,
        release=release,
        state=feed_state,
        fixed_version=fixed if feed_state is FeedState.FIXED else None,
        urgency=word,
        nodsa=_nodsa(state),
        description=description,
        feed=FEED,
    )


def _nodsa(state: dict[str, Any]) -> str | None:
    """The tracker's nodsa text with its reason (``Minor issue (postponed)``), if it gives one."""
    text, reason = state.get("nodsa", "").strip(), state.get("nodsa_reason", "").strip()
    if text and reason:
        return f"{text} ({reason})"
    return text or reason or None
