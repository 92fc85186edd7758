"""The bundle container: read entirely in memory, trusting nothing.

Layout (a canonical ZIP, see ``zipfmt``): ``manifest.json`` (canonical JSON),
``manifest.sig`` (detached Ed25519 signature over the exact manifest bytes),
then the payload files the manifest lists with their SHA-256, sorted by name.
Reading order matters: structure, names and sizes are checked first, the
signature is verified before the manifest is parsed, and payload files are
only hashed, never interpreted, here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nonstop.bundle.errors import (
    BadSignatureError,
    BundleError,
    BundleTooLargeError,
    DigestMismatchError,
    DuplicateMemberError,
    MalformedBundleError,
    MissingMemberError,
    OversizedMemberError,
    UnexpectedMemberError,
    UnknownKeyError,
    UnsafeMemberNameError,
)
from nonstop.bundle.keys import SigningKey, TrustedKeys
from nonstop.bundle.manifest import Manifest, PayloadFile, PayloadRole
from nonstop.bundle.zipfmt import read_members, write_members
from nonstop.files import read_bounded

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
RESERVED_NAMES = frozenset({MANIFEST_NAME, SIGNATURE_NAME})

MAX_BUNDLE_SIZE = 256 * 1024 * 1024
MAX_MANIFEST_SIZE = 1024 * 1024
MAX_SIGNATURE_SIZE = 4096
MAX_MEMBERS = 66
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: signature checked, manifest valid, every payload digest matching."""

    manifest: Manifest
    manifest_bytes: bytes
    key_id: str
    sha256: str
    files: Mapping[str, bytes]

    def payload(self, role: PayloadRole) -> bytes:
        """The verified bytes of the first payload with ROLE; KeyError when there is none."""
        entry = self.manifest.payload_with_role(role)
        if entry is None:
            raise KeyError(f"bundle has no {role} payload")
        return self.files[entry.name]


def describe_payload(name: str, role: PayloadRole, data: bytes) -> PayloadFile:
    """The manifest entry for a payload file."""
    return PayloadFile(
        name=name, role=role, sha256=hashlib.sha256(data).hexdigest(), size=len(data)
    )


def pack(manifest: Manifest, files: Mapping[str, bytes], key: SigningKey) -> bytes:
    """Sign MANIFEST and write it with FILES into bundle bytes (deterministic output)."""
    listed = {entry.name: entry for entry in manifest.payload}
    if set(listed) != set(files):
        raise BundleError(f"payload files {sorted(files)} do not match manifest {sorted(listed)}")
    for name, data in files.items():
        if name in RESERVED_NAMES or not _SAFE_NAME.match(name):
            raise UnsafeMemberNameError(f"payload name {name!r} is not allowed")
        if describe_payload(name, listed[name].role, data) != listed[name]:
            raise DigestMismatchError(f"payload {name} does not match its manifest entry")
    manifest_bytes = manifest.to_json_bytes()
    return write_members(
        [
            (MANIFEST_NAME, manifest_bytes),
            (SIGNATURE_NAME, encode_signature(key.key_id, key.sign(manifest_bytes))),
            *sorted(files.items()),
        ]
    )


def encode_signature(key_id: str, signature: bytes) -> bytes:
    """The canonical bytes of the ``manifest.sig`` member."""
    document = {
        "algorithm": "ed25519",
        "key_id": key_id,
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")


def read_bundle_bytes(path: Path) -> bytes:
    """The bytes of the bundle file PATH, read no further than MAX_BUNDLE_SIZE."""
    return read_bounded(
        path, MAX_BUNDLE_SIZE, "bundle file", MalformedBundleError, BundleTooLargeError
    )


def open_bundle(source: Path | bytes, trusted: TrustedKeys) -> Bundle:
    """Read and verify a bundle from a path or from bytes; raise a BundleError subclass if bad."""
    data = read_bundle_bytes(source) if isinstance(source, Path) else bytes(source)
    if len(data) > MAX_BUNDLE_SIZE:
        raise BundleTooLargeError(f"bundle is larger than {MAX_BUNDLE_SIZE} bytes")
    members = _read_structure(data)
    manifest_bytes = bytes(members[MANIFEST_NAME])
    key_id, signature = decode_signature(members[SIGNATURE_NAME])
    public_key = trusted.get(key_id)
    if public_key is None:
        raise UnknownKeyError(f"bundle is signed by key {key_id}, which is not trusted")
    if not public_key.verify(signature, manifest_bytes):
        raise BadSignatureError(f"signature by key {key_id} does not verify over the manifest")
    # From here on the manifest bytes are authentic.
    manifest = Manifest.from_json_bytes(manifest_bytes)
    files = _check_payload(manifest, members)
    return Bundle(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        key_id=key_id,
        sha256=hashlib.sha256(data).hexdigest(),
        files=files,
    )


def read_unverified_manifest(data: bytes) -> tuple[Manifest, str]:
    """Manifest and claimed signer of a bundle WITHOUT verifying it (for ``inspect`` only)."""
    members = _read_structure(data)
    key_id, _ = decode_signature(members[SIGNATURE_NAME])
    return Manifest.from_json_bytes(bytes(members[MANIFEST_NAME])), key_id


def _read_structure(data: bytes) -> dict[str, memoryview]:
    """Members by name, after the checks that need no key: layout, names, order, sizes."""
    ordered = read_members(data, MAX_MEMBERS)
    names = [name for name, _ in ordered]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DuplicateMemberError(f"member {name} appears twice")
        seen.add(name)
    for required in (MANIFEST_NAME, SIGNATURE_NAME):
        if required not in seen:
            raise MissingMemberError(f"bundle has no {required}")
    payload_names = names[2:]
    if names[:2] != [MANIFEST_NAME, SIGNATURE_NAME] or payload_names != sorted(payload_names):
        raise MalformedBundleError("bundle members are not in canonical order")
    members = dict(ordered)
    for name, limit in ((MANIFEST_NAME, MAX_MANIFEST_SIZE), (SIGNATURE_NAME, MAX_SIGNATURE_SIZE)):
        if len(members[name]) > limit:
            raise OversizedMemberError(f"member {name} exceeds {limit} bytes")
    return members


def _check_payload(manifest: Manifest, members: Mapping[str, memoryview]) -> dict[str, bytes]:
    listed = {entry.name: entry for entry in manifest.payload}
    reserved = RESERVED_NAMES & set(listed)
    if reserved:
        raise UnsafeMemberNameError(f"manifest lists reserved member {sorted(reserved)[0]}")
    missing = sorted(set(listed) - set(members))
    if missing:
        raise MissingMemberError(f"payload file {missing[0]} listed in the manifest is missing")
    extra = sorted(set(members) - set(listed) - RESERVED_NAMES)
    if extra:
        raise UnexpectedMemberError(f"member {extra[0]} is not listed in the signed manifest")
    files: dict[str, bytes] = {}
    for name, entry in listed.items():
        content = members[name]
        if len(content) > entry.size:
            raise OversizedMemberError(
                f"payload {name} is {len(content)} bytes, the manifest allows {entry.size}"
            )
        if len(content) < entry.size:
            raise DigestMismatchError(
                f"payload {name} is {len(content)} bytes, the manifest says {entry.size}"
            )
        if hashlib.sha256(content).hexdigest() != entry.sha256:
            raise DigestMismatchError(f"payload {name} does not match its SHA-256 in the manifest")
        files[name] = bytes(content)
    return files


def decode_signature(data: memoryview | bytes) -> tuple[str, bytes]:
    """Key id and signature bytes from a ``manifest.sig`` member in canonical form."""
    try:
        document = json.loads(bytes(data).decode("ascii"))
        if not isinstance(document, dict) or set(document) != {"algorithm", "key_id", "signature"}:
            raise ValueError("unexpected fields")
        key_id = document["key_id"]
        signature = base64.b64decode(document["signature"], validate=True)
    except (UnicodeDecodeError, ValueError, TypeError, binascii.Error):
        raise BadSignatureError(f"{SIGNATURE_NAME} is not a valid Ed25519 signature") from None
    if document["algorithm"] != "ed25519":
        raise BadSignatureError(f"{SIGNATURE_NAME} uses an unsupported algorithm")
    if not isinstance(key_id, str) or not re.fullmatch(r"[0-9a-f]{16}", key_id):
        raise BadSignatureError(f"{SIGNATURE_NAME} names no valid key id")
    if len(signature) != 64:
        raise BadSignatureError(f"{SIGNATURE_NAME} signature has the wrong length")
    if encode_signature(key_id, signature) != bytes(data):
        raise BadSignatureError(f"{SIGNATURE_NAME} is not in canonical form")
    return key_id, signature
