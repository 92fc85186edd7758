"""The patch server's answers as the agent reads them (API v1, docs/api.md), strictly checked.

The server's own pydantic models (``nonstop.server.schemas``) take half a
second to import, which the agent pays on every command; these small frozen
dataclasses check the few answers the agent reads, field by field. Anything
missing, of the wrong type or out of shape is a :class:`MalformedAnswer`:
the agent never acts on a half-understood answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
T = TypeVar("T")


class MalformedAnswer(Exception):
    """The server answered something that is not a valid API v1 document."""


def _optional(document: Any, name: str, kind: type[T]) -> T | None:
    """DOCUMENT[NAME] checked to be a KIND, or None when absent or null."""
    if not isinstance(document, dict):
        raise MalformedAnswer(f"expected a JSON object around {name!r}")
    value = document.get(name)
    if value is None:
        return None
    # bool is an int in Python: refuse it where a number is expected.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedAnswer(f"field {name!r} is not a {kind.__name__}")
    return value


def _field(document: Any, name: str, kind: type[T]) -> T:
    value = _optional(document, name, kind)
    if value is None:
        raise MalformedAnswer(f"field {name!r} is missing")
    return value


def _time(document: Any, name: str) -> datetime | None:
    text = _optional(document, name, str)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise MalformedAnswer(f"field {name!r} is not an ISO 8601 time") from None


@dataclass(frozen=True)
class Registration:
    """The server's answer to a registration: a 32-hex host id and the host's secret token."""

    host_id: str
    token: str
    feed: str
    checkin_interval_seconds: int

    @classmethod
    def parse(cls, document: Any) -> Registration:
        """MalformedAnswer unless DOCUMENT has every field, typed, and a 32-hex host id."""
        host_id = _field(document, "host_id", str)
        if not re.fullmatch(r"[0-9a-f]{32}", host_id):
            raise MalformedAnswer("field 'host_id' is not a host id")
        return cls(
            host_id=host_id,
            token=_field(document, "token", str),
            feed=_field(document, "feed", str),
            checkin_interval_seconds=_field(document, "checkin_interval_seconds", int),
        )


@dataclass(frozen=True)
class BundleRef:
    """A bundle the server offers. Only the form is checked here: a 64-hex digest and a URL
    path under ``/api/v1/bundles/`` (so on this server); the file itself is verified later.
    """

    sha256: str
    level: int
    size: int
    effective_version: str
    url: str
    published_at: datetime | None

    @classmethod
    def parse(cls, document: Any) -> BundleRef:
        """MalformedAnswer unless every field is there and typed (digest and URL path included)."""
        sha256 = _field(document, "sha256", str)
        if not _SHA256.match(sha256):
            raise MalformedAnswer("bundle sha256 is not a SHA-256 digest")
        url = _field(document, "url", str)
        if not url.startswith("/api/v1/bundles/"):
            raise MalformedAnswer(f"bundle url {url!r} is not a bundle download path")
        return cls(
            sha256=sha256,
            level=_field(document, "level", int),
            size=_field(document, "size", int),
            effective_version=_field(document, "effective_version", str),
            url=url,
            # Servers before the delayed-feed change do not send it.
            published_at=_time(document, "published_at"),
        )


@dataclass(frozen=True)
class HeldLevel:
    """A published level the feed's delay still holds back, and when it is released."""

    level: int
    release_at: datetime

    @classmethod
    def parse(cls, document: Any) -> HeldLevel:
        """MalformedAnswer unless DOCUMENT has an integer level and an ISO 8601 release time."""
        release_at = _time(document, "release_at")
        if release_at is None:
            raise MalformedAnswer("field 'release_at' is missing")
        return cls(level=_field(document, "level", int), release_at=release_at)


@dataclass(frozen=True)
class Decision:
    """The server's decision for one target: ``apply`` always carries a bundle, ``none`` may not."""

    target: str
    kind: str
    name: str
    applied_level: int | None
    action: str
    reason: str
    bundle: BundleRef | None
    held_back: tuple[HeldLevel, ...] = ()

    @classmethod
    def parse(cls, document: Any) -> Decision:
        """MalformedAnswer for a missing or mistyped field, an unknown kind or action, or an
        ``apply`` without a bundle.
        """
        kind = _field(document, "kind", str)
        action = _field(document, "action", str)
        if kind not in ("kernel", "userspace"):
            raise MalformedAnswer(f"unknown target kind {kind!r}")
        if action not in ("apply", "none"):
            raise MalformedAnswer(f"unknown action {action!r}")
        raw_bundle = _optional(document, "bundle", dict)
        bundle = BundleRef.parse(raw_bundle) if raw_bundle is not None else None
        if action == "apply" and bundle is None:
            raise MalformedAnswer("an 'apply' decision without a bundle")
        return cls(
            target=_field(document, "target", str),
            kind=kind,
            name=_field(document, "name", str),
            applied_level=_optional(document, "applied_level", int),
            action=action,
            reason=_field(document, "reason", str),
            bundle=bundle,
            # Servers before held-back levels were reported do not send it.
            held_back=tuple(
                HeldLevel.parse(item) for item in _optional(document, "held_back", list) or []
            ),
        )

    @property
    def build_id(self) -> str | None:
        """The library build-id of a userspace target (``userspace:<build-id>``)."""
        kind, _, rest = self.target.partition(":")
        return rest if kind == "userspace" else None


@dataclass(frozen=True)
class CheckinAnswer:
    """The server's answer to a check-in: its decisions, and when to check in next (seconds)."""

    host_id: str
    checkin_id: str
    recorded: bool
    feed: str
    server_time: datetime
    next_checkin_seconds: int
    targets: tuple[Decision, ...]
    packages_digest: str | None = None
    """The installed-package list the server holds for this host (None: send it)."""
    vulnerabilities_digest: str | None = None
    """Identifies the inputs of the host's findings: fetch them again when it changes."""

    @classmethod
    def parse(cls, document: Any) -> CheckinAnswer:
        """MalformedAnswer if DOCUMENT or any of its decisions is not well formed."""
        targets = _field(document, "targets", list)
        server_time = _time(document, "server_time")
        if server_time is None:
            raise MalformedAnswer("field 'server_time' is missing")
        return cls(
            host_id=_field(document, "host_id", str),
            checkin_id=_field(document, "checkin_id", str),
            recorded=_field(document, "recorded", bool),
            feed=_field(document, "feed", str),
            server_time=server_time,
            next_checkin_seconds=_field(document, "next_checkin_seconds", int),
            targets=tuple(Decision.parse(item) for item in targets),
            packages_digest=_optional(document, "packages_digest", str),
            vulnerabilities_digest=_optional(document, "vulnerabilities_digest", str),
        )


_CVE = re.compile(r"CVE-\d{4}-\d{4,12}")
MAX_FINDINGS = 100_000


@dataclass(frozen=True)
class HostFindings:
    """The host's vulnerability findings as the server computed them (its API document, kept
    as checked JSON for ``--vulnerabilities``)."""

    document: dict[str, Any]

    @classmethod
    def parse(cls, document: Any) -> HostFindings:
        """MalformedAnswer unless DOCUMENT has its counts and well-formed findings."""
        counts = _field(document, "counts", dict)
        if not all(isinstance(k, str) and type(v) is int for k, v in counts.items()):
            raise MalformedAnswer("field 'counts' is not a table of numbers")
        findings = _field(document, "findings", list)
        if len(findings) > MAX_FINDINGS:
            raise MalformedAnswer(f"more than {MAX_FINDINGS} findings")
        for finding in findings:
            if not _CVE.fullmatch(_field(finding, "cve", str)):
                raise MalformedAnswer("a finding's cve is not a CVE id")
            _field(finding, "source", str)
            _field(finding, "status", str)
            for name in ("installed_version", "fixed_version", "urgency", "nodsa"):
                _optional(finding, name, str)
            for process in _field(finding, "processes", list):
                _field(process, "pid", int)
                _field(process, "name", str)
        _field(document, "inputs_digest", str)
        return cls(document)
