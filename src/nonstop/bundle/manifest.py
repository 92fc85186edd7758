"""The bundle manifest: its typed form, its JSON Schema and its canonical bytes.

The schema (``manifest.schema.json`` beside this module) is the contract; the
dataclasses here are the typed view code works with. Parsing validates against
the schema first, so every dataclass built from a bundle is known to be valid.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

from nonstop.bundle.errors import ManifestSchemaError, UnsupportedFormatVersionError

FORMAT_VERSION = 1
Kind = Literal["userspace", "kernel"]
PayloadRole = Literal["object", "symbols", "module", "source"]


@cache
def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema, loaded once and shared (do not modify it)."""
    from importlib import resources

    text = resources.files("nonstop.bundle").joinpath("manifest.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(frozen=True)
class PackageInfo:
    """The package that installed a target (from dpkg or rpm): informative, never identity."""

    name: str
    version: str
    distro: str | None = None


@dataclass(frozen=True)
class UserspaceTarget:
    """One exact library file, identified by its GNU build-id."""

    build_id: str
    soname: str
    arch: str = "x86_64"
    filename: str | None = None
    package: PackageInfo | None = None

    @property
    def key(self) -> str:
        """How the patch server and the agent name this target (bundles are indexed by it)."""
        return f"userspace:{self.build_id}"

    def describe(self) -> str:
        return f"{self.soname} (build-id {self.build_id})"


@dataclass(frozen=True)
class KernelTarget:
    """One exact kernel build: its release plus its build-id or /proc/version digest."""

    release: str
    build_id: str | None = None
    version_digest: str | None = None
    arch: str = "x86_64"
    package: PackageInfo | None = None

    @property
    def key(self) -> str:
        """How the patch server and the agent name this target: by build-id when it has one,
        else by the /proc/version digest."""
        return f"kernel:{self.release}:{self.build_id or self.version_digest}"

    def describe(self) -> str:
        ident = f"build-id {self.build_id}" if self.build_id else f"version {self.version_digest}"
        return f"kernel {self.release} ({ident})"

    def matches(self, running: KernelTarget) -> bool:
        """True when RUNNING is the exact build this target names."""
        if self.release != running.release:
            return False
        if self.build_id and running.build_id:
            return self.build_id == running.build_id
        return bool(self.version_digest) and self.version_digest == running.version_digest


Target = UserspaceTarget | KernelTarget


@dataclass(frozen=True)
class Fix:
    title: str
    cves: tuple[str, ...] = ()
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Update:
    """The distribution update a level was built from (``nonstop build debian``)."""

    source: str
    from_version: str
    to_version: str


@dataclass(frozen=True)
class FunctionPatch:
    """A function this level replaces: TARGET in the patched object, REPLACEMENT in the patch.

    For kernel patches OBJECT names the kernel object holding the function
    (``vmlinux`` or a module name).
    """

    target: str
    replacement: str | None = None
    object: str | None = None
    original_sha256: str | None = None
    """SHA-256 of the target function's bytes in the target file (userspace, optional): the
    engine refuses a process whose code there differs (a same-build-id file with other code)."""


@dataclass(frozen=True)
class PayloadFile:
    """A payload file as the signed manifest lists it: SHA-256 (hex) and size in bytes."""

    name: str
    role: PayloadRole
    sha256: str
    size: int


def utc_now() -> str:
    """The current time as a manifest's ``created`` (UTC, whole seconds, e.g.
    2026-12-05T21:25:00Z)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest. One read from a bundle passed the schema; one a builder makes is
    checked by :meth:`to_json_bytes`, whose bytes are exactly what is signed."""

    kind: Kind
    target: Target
    level: int
    functions: tuple[FunctionPatch, ...]
    payload: tuple[PayloadFile, ...]
    effective_version: str
    builder: str
    fixes: tuple[Fix, ...] = ()
    update: Update | None = None
    created: str = field(default_factory=utc_now)
    description: str | None = None
    format_version: int = FORMAT_VERSION

    @property
    def cves(self) -> list[str]:
        """The CVEs of all fixes, sorted, each once."""
        return sorted({cve for fix in self.fixes for cve in fix.cves})

    def payload_with_role(self, role: PayloadRole) -> PayloadFile | None:
        return next((item for item in self.payload if item.role == role), None)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON types, fields that are None left out (as in its bytes)."""
        document: dict[str, Any] = _drop_none(asdict(self))
        return document

    def to_json_bytes(self) -> bytes:
        """Canonical bytes: the exact bytes that get signed and stored."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        data = text.encode("ascii")
        validate_manifest_dict(json.loads(data))
        return data

    @classmethod
    def from_json_bytes(cls, data: bytes) -> Manifest:
        """The manifest in DATA, validated against the schema (ManifestSchemaError or
        UnsupportedFormatVersionError); DATA need not be in canonical form."""
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestSchemaError(f"manifest is not valid JSON: {exc}") from None
        validate_manifest_dict(document)
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Manifest:
        """Build from a dict that already passed :func:`validate_manifest_dict`."""
        target_doc = dict(doc["target"])
        package = target_doc.pop("package", None)
        package_info = PackageInfo(**package) if package else None
        target: Target
        if doc["kind"] == "userspace":
            target = UserspaceTarget(**target_doc, package=package_info)
        else:
            target = KernelTarget(**target_doc, package=package_info)
        return cls(
            format_version=doc["format_version"],
            kind=doc["kind"],
            target=target,
            level=doc["level"],
            fixes=tuple(
                Fix(
                    title=fix["title"],
                    cves=tuple(fix["cves"]),
                    references=tuple(fix.get("references", ())),
                )
                for fix in doc["fixes"]
            ),
            functions=tuple(FunctionPatch(**item) for item in doc["functions"]),
            effective_version=doc["effective_version"],
            update=Update(**doc["update"]) if "update" in doc else None,
            description=doc.get("description"),
            created=doc["created"],
            builder=doc["builder"],
            payload=tuple(PayloadFile(**item) for item in doc["payload"]),
        )


def validate_manifest_dict(document: Any) -> None:
    """Check the format version first (its own error), then the whole schema."""
    if not isinstance(document, dict):
        raise ManifestSchemaError("manifest is not a JSON object")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatVersionError(
            f"unsupported bundle format version {version!r} (this reader knows {FORMAT_VERSION})"
        )
    import jsonschema  # a quarter second to import: only when a manifest is read

    validator = jsonschema.Draft202012Validator(manifest_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ManifestSchemaError(f"manifest schema violation at {where}: {error.message[:200]}")
    names = [item["name"] for item in document["payload"]]
    if len(names) != len(set(names)):
        raise ManifestSchemaError("manifest schema violation: payload names are not unique")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(item) for item in value]
    return value
