"""OSV records (ossf.github.io/osv-schema) of Debian: DSA, DLA, DTSA and DEBIAN-CVE records.

A document is one record, a JSON list of records, or a zip of record files
(osv.dev's ``Debian/all.zip``: one ``<id>.json`` per record). A record's CVE
ids are its own id when it is one, the id inside ``DEBIAN-CVE-...``, and the
CVE ids of ``upstream`` and ``aliases``. Each ``affected`` entry of ecosystem
``Debian:N`` (or ``Debian:N.M``, a point release: the release is ``debian:N``)
names a source package; its ``ECOSYSTEM`` ranges give:

- a ``fixed`` event: FIXED at that version (of several, the latest);
- only ``introduced`` or ``last_affected`` events: OPEN.

Every CVE of the record gets one advisory per such entry. Other ecosystems,
other range types, withdrawn records and records that name no CVE are skipped
and counted. The urgency is Debian's (``ecosystem_specific`` or
``database_specific`` ``urgency``). The CVSS base score is computed from the
record's vector (``severity``, the newest CVSS version given) by the ``cvss``
library, Red Hat's implementation of FIRST's specifications. Two records on
the same CVE, source and release are merged by ``batch.merged``.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cvss import CVSS2, CVSS3, CVSS4, CVSSError

from nonstop.cve import versions
from nonstop.cve.batch import PACKAGE_NAME, FeedBatch, batch, merged, urgency
from nonstop.cve.errors import FeedError, Malformed, place, shown
from nonstop.cve.ids import is_cve_id
from nonstop.cve.model import Advisory, FeedState, release_key

FEED = "osv"
LABEL = "OSV"

MAX_ZIP_MEMBERS = 500_000
"""osv.dev's Debian/all.zip holds some tens of thousands of records."""
MAX_RECORD_BYTES = 8 * 1024 * 1024
"""One record is a few kilobytes; DEBIAN-CVE records listing every affected version, some 100 kB."""
MAX_ZIP_CONTENT_BYTES = 2 * 1024 * 1024 * 1024
"""All members together, uncompressed."""
MAX_DESCRIPTION = 2000

_DEBIAN = re.compile(r"Debian:(\d{1,3})(?:\.\d{1,3})?")
_EVENTS = ("introduced", "fixed", "last_affected", "limit")
# Newest first: the score of the newest CVSS version a record gives is kept.
_CVSS = {"CVSS_V4": CVSS4, "CVSS_V3": CVSS3, "CVSS_V2": CVSS2}


def parse_records(
    records: Iterable[tuple[str, object]], releases: Collection[str] | None = None
) -> FeedBatch:
    """The advisories of decoded OSV RECORDS, each given with where it came from (a zip
    member's name, a list index); for RELEASES (``debian:12``...) or all; FeedError if one
    record is malformed."""
    wanted = None if releases is None else frozenset(releases)
    skipped: Counter[str] = Counter()
    advisories: list[Advisory] = []
    count = 0
    for origin, record in records:
        count += 1
        advisories.extend(_record(origin, record, wanted, skipped))
    return batch(FEED, merged(advisories), count, skipped)


def read_records(document: object, releases: Collection[str] | None = None) -> FeedBatch:
    """The advisories of a decoded JSON DOCUMENT holding one record or a list of them."""
    if isinstance(document, list):
        return parse_records(
            ((f"[{index}]", item) for index, item in enumerate(document)), releases
        )
    return parse_records([("(record)", document)], releases)


def read_zip(data: bytes, name: str = "zip", releases: Collection[str] | None = None) -> FeedBatch:
    """The advisories of a zip of OSV record files (DATA, called NAME in errors)."""
    skipped: Counter[str] = Counter()
    result = parse_records(_zip_records(data, name, skipped), releases)
    skipped.update(result.skipped)
    return FeedBatch(result.feed, result.advisories, result.records, dict(skipped))


def _zip_records(data: bytes, name: str, skipped: Counter[str]) -> Iterator[tuple[str, object]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise FeedError(f"not a zip file: {exc}", feed=LABEL, where=name) from None
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise FeedError(f"more than {MAX_ZIP_MEMBERS} members", feed=LABEL, where=name)
    total = 0
    for member in members:
        where = f"{name}:{place(member.filename)}"
        if member.is_dir():
            continue
        if not member.filename.endswith(".json"):
            skipped["zip members that are not .json files"] += 1
            continue
        if member.file_size > MAX_RECORD_BYTES:
            raise FeedError(f"larger than {MAX_RECORD_BYTES} bytes", feed=LABEL, where=where)
        try:  # zipfile reads no more than the size checked above, and checks the CRC
            with archive.open(member) as handle:
                content = handle.read()
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
            raise FeedError(f"cannot be read: {exc}", feed=LABEL, where=where) from None
        total += len(content)
        if total > MAX_ZIP_CONTENT_BYTES:
            raise FeedError(
                f"members hold more than {MAX_ZIP_CONTENT_BYTES} bytes", feed=LABEL, where=name
            )
        yield where, decode_json(content, LABEL, where)


def decode_json(data: bytes, label: str, where: str) -> object:
    """DATA as JSON (UTF-8); FeedError naming LABEL and WHERE if it is not."""
    try:
        return json.loads(data.decode("utf-8"))  # bytes would be taken as UTF-16 or 32 too
    except UnicodeDecodeError:
        raise FeedError("not UTF-8 text", feed=label, where=where) from None
    except json.JSONDecodeError as exc:
        raise FeedError(
            f"not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}", feed=label, where=where
        ) from None
    except RecursionError:
        raise FeedError(
            "not JSON this reader takes: nested too deep", feed=label, where=where
        ) from None


def _record(
    origin: str, record: object, wanted: frozenset[str] | None, skipped: Counter[str]
) -> list[Advisory]:
    if not isinstance(record, dict):
        raise FeedError("a record is not an object", feed=LABEL, where=origin)
    ident = record.get("id")
    if not isinstance(ident, str) or not ident or len(ident) > 200 or not ident.isprintable():
        raise FeedError(f"id {shown(ident)} is not an OSV id", feed=LABEL, where=origin)
    where = place(ident)
    if record.get("withdrawn") is not None:
        skipped["withdrawn records"] += 1
        return []
    cves = _cves(ident, record, where)
    affected = _list(record, "affected", where)
    summary = record.get("summary") or record.get("details")
    if summary is not None and not isinstance(summary, str):
        raise FeedError("summary or details is not text", feed=LABEL, where=where)
    cvss = _score(record, where)
    found: list[Advisory] = []
    for index, item in enumerate(affected):
        item_where = f"{where}/affected[{index}]"
        entry = _affected(item, item_where, skipped)
        if entry is None:
            continue
        if wanted is not None and entry.release not in wanted:
            skipped["affected entries of releases not asked for"] += 1
            continue
        found.extend(
            Advisory(
                cve=cve,
                source=entry.source,
                release=entry.release,
                state=entry.state,
                fixed_version=entry.fixed,
                urgency=entry.urgency,
                cvss=entry.cvss if entry.cvss is not None else cvss,
                description=summary[:MAX_DESCRIPTION] if summary else None,
                feed=FEED,
            )
            for cve in cves
        )
    if not cves:
        skipped["records that name no CVE"] += 1
        return []
    return found


@dataclass(frozen=True)
class _Entry:
    """What one Debian ``affected`` entry says, for every CVE of its record."""

    source: str
    release: str
    state: FeedState
    fixed: str | None
    urgency: str | None
    cvss: float | None


def _affected(item: object, where: str, skipped: Counter[str]) -> _Entry | None:
    if not isinstance(item, dict):
        raise FeedError("not an object", feed=LABEL, where=where)
    package = item.get("package")
    if not isinstance(package, dict) or not isinstance(package.get("ecosystem"), str):
        raise FeedError("package is not an object with an ecosystem", feed=LABEL, where=where)
    ecosystem = package["ecosystem"]
    match = _DEBIAN.fullmatch(ecosystem)
    if match is None:
        if ecosystem.startswith("Debian"):
            skipped["Debian affected entries without a release number"] += 1
        else:
            skipped["affected entries of other ecosystems"] += 1
        return None
    name = package.get("name")
    if not isinstance(name, str) or not PACKAGE_NAME.fullmatch(name):
        raise FeedError(
            f"package name {shown(name)} is not a Debian source package name",
            feed=LABEL,
            where=where,
        )
    release = release_key("debian", match.group(1))
    events = _ecosystem_events(item, where, skipped)
    if not events:
        skipped["affected entries without an ECOSYSTEM range"] += 1
        return None
    fixed_versions = [version for kind, version in events if kind == "fixed"]
    fixed = None
    for version in fixed_versions:
        if fixed is None or versions.is_older(release, fixed, version):
            fixed = version
    if fixed is None and not any(kind in ("introduced", "last_affected") for kind, _ in events):
        skipped["affected entries without an ECOSYSTEM range"] += 1
        return None
    return _Entry(
        source=name,
        release=release,
        state=FeedState.FIXED if fixed else FeedState.OPEN,
        fixed=fixed,
        urgency=_urgency(item, where),
        cvss=_score(item, where),
    )


def _ecosystem_events(
    item: dict[str, Any], where: str, skipped: Counter[str]
) -> list[tuple[str, str]]:
    """The (kind, version) events of ITEM's ECOSYSTEM ranges, each version checked."""
    events = []
    for index, span in enumerate(_list(item, "ranges", where)):
        span_where = f"{where}/ranges[{index}]"
        if not isinstance(span, dict) or not isinstance(span.get("type"), str):
            raise FeedError("not an object with a type", feed=LABEL, where=span_where)
        if span["type"] != "ECOSYSTEM":
            skipped["ranges that are not ECOSYSTEM"] += 1
            continue
        for number, event in enumerate(_list(span, "events", span_where)):
            event_where = f"{span_where}/events[{number}]"
            if not isinstance(event, dict) or len(event) != 1:
                raise FeedError("not an object of one event", feed=LABEL, where=event_where)
            ((kind, version),) = event.items()
            if kind not in _EVENTS:
                raise FeedError(
                    f"event {shown(kind)} is not one of {', '.join(_EVENTS)}",
                    feed=LABEL,
                    where=event_where,
                )
            if not isinstance(version, str):
                raise FeedError(f"{kind} is not text", feed=LABEL, where=event_where)
            try:
                versions.debian_version(version)
            except versions.VersionError:
                raise FeedError(
                    f"{kind} {shown(version)} is not a Debian version",
                    feed=LABEL,
                    where=event_where,
                ) from None
            events.append((kind, version))
    return events


def _cves(ident: str, record: dict[str, Any], where: str) -> list[str]:
    """The CVE ids RECORD names: its id, DEBIAN-CVE-'s id, and those of upstream and aliases."""
    names = [ident, ident.removeprefix("DEBIAN-")]
    for field in ("upstream", "aliases"):
        values = _list(record, field, where)
        if not all(isinstance(value, str) for value in values):
            raise FeedError(f"{field} is not a list of ids", feed=LABEL, where=where)
        names.extend(values)
    return list(dict.fromkeys(name for name in names if is_cve_id(name)))


def _list(document: dict[str, Any], field: str, where: str) -> list[Any]:
    value = document.get(field, [])
    if not isinstance(value, list):
        raise FeedError(f"{field} is not a list", feed=LABEL, where=where)
    return value


def _specific(item: dict[str, Any], field: str, where: str) -> dict[str, Any]:
    value = item.get(field, {})
    if not isinstance(value, dict):
        raise FeedError(f"{field} is not an object", feed=LABEL, where=where)
    return value


def _urgency(item: dict[str, Any], where: str) -> str | None:
    """Debian's urgency word of an affected entry, if it gives one."""
    for field in ("ecosystem_specific", "database_specific"):
        word = _specific(item, field, where).get("urgency")
        if word is not None:
            try:
                return urgency(word)
            except Malformed as exc:
                raise FeedError(str(exc), feed=LABEL, where=f"{where}/{field}") from None
    return None


def _score(document: dict[str, Any], where: str) -> float | None:
    """The CVSS base score of DOCUMENT's newest CVSS vector in ``severity``, if it has one."""
    vectors: dict[str, str] = {}
    for index, item in enumerate(_list(document, "severity", where)):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise FeedError(
                "not an object with a type", feed=LABEL, where=f"{where}/severity[{index}]"
            )
        if item["type"] in _CVSS:
            if not isinstance(item.get("score"), str):
                raise FeedError(
                    "score is not a vector", feed=LABEL, where=f"{where}/severity[{index}]"
                )
            vectors.setdefault(item["type"], item["score"])
    for kind, calculator in _CVSS.items():
        if kind in vectors:
            try:
                return float(calculator(vectors[kind]).base_score)
            except CVSSError as exc:
                raise FeedError(
                    f"{kind} {shown(vectors[kind])} is not a CVSS vector: {exc}",
                    feed=LABEL,
                    where=f"{where}/severity",
                ) from None
    return None
