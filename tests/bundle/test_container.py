"""Reading bundles: every rejection cause has its own exception and a one-line message."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from nonstop.bundle import SigningKey, TrustedKeys, open_bundle, pack
from nonstop.bundle.container import (
    MANIFEST_NAME,
    MAX_BUNDLE_SIZE,
    MAX_MANIFEST_SIZE,
    SIGNATURE_NAME,
    encode_signature,
)
from nonstop.bundle.errors import (
    BadSignatureError,
    BundleError,
    BundleTooLargeError,
    DecompressionBombError,
    DigestMismatchError,
    DuplicateMemberError,
    MalformedBundleError,
    ManifestSchemaError,
    MissingMemberError,
    OversizedMemberError,
    UnexpectedMemberError,
    UnknownKeyError,
    UnsafeMemberNameError,
    UnsupportedFormatVersionError,
)
from nonstop.bundle.zipfmt import read_members, write_members
from tests.conftest import SAMPLE_OBJECT, sample_manifest


def members_of(data: bytes) -> list[tuple[str, bytes]]:
    return [(name, bytes(content)) for name, content in read_members(data, 100)]


def signed(manifest_bytes: bytes, key: SigningKey, *payload: tuple[str, bytes]) -> bytes:
    """A bundle around arbitrary manifest bytes, properly signed by KEY."""
    signature = encode_signature(key.key_id, key.sign(manifest_bytes))
    return write_members([(MANIFEST_NAME, manifest_bytes), (SIGNATURE_NAME, signature), *payload])


def manifest_doc(data: bytes) -> dict[str, object]:
    document: dict[str, object] = json.loads(dict(members_of(data))[MANIFEST_NAME])
    return document


def reject(data: bytes, trusted: TrustedKeys, error: type[BundleError]) -> BundleError:
    with pytest.raises(BundleError) as caught:
        open_bundle(data, trusted)
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    assert "\n" not in str(caught.value) and str(caught.value)
    return caught.value


def test_valid_bundle_opens_with_payload_and_signer(make_bundle, trusted, signing_key):
    bundle = open_bundle(make_bundle(), trusted)
    assert bundle.key_id == signing_key.key_id
    assert bundle.payload("object") == SAMPLE_OBJECT
    assert bundle.manifest.level == 2
    assert bundle.manifest.cves == ["CVE-2024-0001"]


def test_packing_is_deterministic_and_standard_zip(make_bundle):
    data = make_bundle()
    assert data == make_bundle()
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert archive.namelist() == [MANIFEST_NAME, SIGNATURE_NAME, "patch.o"]
    assert archive.read("patch.o") == SAMPLE_OBJECT


def test_opens_from_path(make_bundle, trusted, tmp_path):
    path = tmp_path / "b.nsb"
    path.write_bytes(make_bundle())
    assert open_bundle(path, trusted).manifest.level == 2


def test_bad_signature(make_bundle, trusted):
    members = members_of(make_bundle())
    tampered = members[0][1].replace(b'"level":2', b'"level":9')
    data = write_members([(MANIFEST_NAME, tampered), *members[1:]])
    error = reject(data, trusted, BadSignatureError)
    assert "does not verify" in str(error)


def test_unknown_key(trusted):
    stranger = SigningKey.generate()
    data = pack(sample_manifest({"patch.o": b"x"}), {"patch.o": b"x"}, stranger)
    error = reject(data, trusted, UnknownKeyError)
    assert stranger.key_id in str(error)


def test_signature_checked_before_manifest_is_parsed(trusted, signing_key):
    stranger = SigningKey.generate()
    reject(signed(b"{not json", stranger), trusted, UnknownKeyError)
    garbage = b"\xff{not json"
    forged = encode_signature(signing_key.key_id, bytes(64))
    data = write_members([(MANIFEST_NAME, garbage), (SIGNATURE_NAME, forged)])
    reject(data, trusted, BadSignatureError)


def test_payload_digest_mismatch(make_bundle, trusted):
    members = members_of(make_bundle())
    flipped = bytearray(members[2][1])
    flipped[100] ^= 0xFF
    data = write_members([*members[:2], ("patch.o", bytes(flipped))])
    error = reject(data, trusted, DigestMismatchError)
    assert "patch.o" in str(error)


def test_payload_shorter_than_declared(make_bundle, trusted):
    members = members_of(make_bundle())
    data = write_members([*members[:2], ("patch.o", members[2][1][:-1])])
    reject(data, trusted, DigestMismatchError)


def test_payload_longer_than_declared(make_bundle, trusted):
    members = members_of(make_bundle())
    data = write_members([*members[:2], ("patch.o", members[2][1] + b"\0")])
    reject(data, trusted, OversizedMemberError)


@pytest.mark.parametrize("missing", [MANIFEST_NAME, SIGNATURE_NAME, "patch.o"])
def test_missing_member(make_bundle, trusted, missing):
    members = [m for m in members_of(make_bundle()) if m[0] != missing]
    error = reject(write_members(members), trusted, MissingMemberError)
    assert missing in str(error)


def test_empty_container_has_no_manifest(trusted):
    reject(write_members([]), trusted, MissingMemberError)


def test_extra_member(make_bundle, trusted):
    members = members_of(make_bundle())
    data = write_members([*members, ("zz-extra.bin", b"surprise")])
    error = reject(data, trusted, UnexpectedMemberError)
    assert "zz-extra.bin" in str(error)


@pytest.mark.parametrize("name", ["../patch.o", "dir/patch.o", "/etc/passwd", "a\\b"])
def test_member_name_with_path_components(make_bundle, trusted, name):
    members = members_of(make_bundle())
    error = reject(write_members([*members, (name, b"x")]), trusted, UnsafeMemberNameError)
    assert "path components" in str(error)


@pytest.mark.parametrize("name", ["..", ".hidden", "sp ace", ""])
def test_member_name_not_plain(make_bundle, trusted, name):
    members = members_of(make_bundle())
    reject(write_members([*members, (name, b"x")]), trusted, UnsafeMemberNameError)


def test_duplicate_member(make_bundle, trusted):
    members = members_of(make_bundle())
    reject(write_members([*members, members[2]]), trusted, DuplicateMemberError)


def test_oversized_manifest(trusted, signing_key):
    huge = b"{" + b" " * MAX_MANIFEST_SIZE + b"}"
    reject(signed(huge, signing_key), trusted, OversizedMemberError)


def test_bundle_file_too_large(tmp_path, trusted):
    path = tmp_path / "huge.nsb"
    with path.open("wb") as handle:
        handle.truncate(MAX_BUNDLE_SIZE + 1)  # sparse: no disk is used
    with pytest.raises(BundleTooLargeError):
        open_bundle(path, trusted)


def test_decompression_bomb_is_refused_without_inflating(make_bundle, trusted):
    members = members_of(make_bundle())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            archive.writestr(name, content)
        archive.writestr("zzbomb", b"\0" * (512 * 1024 * 1024))
    data = out.getvalue()
    assert len(data) < 1024 * 1024  # half a GiB of zeros in well under a MiB
    tracemalloc.start()
    try:
        reject(data, trusted, DecompressionBombError)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_unknown_format_version(make_bundle, trusted, signing_key):
    document = manifest_doc(make_bundle())
    document["format_version"] = 2
    error = reject(
        signed(json.dumps(document).encode(), signing_key), trusted, UnsupportedFormatVersionError
    )
    assert "2" in str(error)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("level", 0),
        ("level", "3"),
        ("kind", "firmware"),
        ("fixes", [{"title": "x", "cves": ["CVE-24-1"]}]),
        ("functions", []),
        ("created", "yesterday"),
        ("surprise", True),
    ],
)
def test_schema_violation(make_bundle, trusted, signing_key, field, value):
    data = make_bundle()
    document = manifest_doc(data)
    document[field] = value
    payload = members_of(data)[2:]
    error = reject(
        signed(json.dumps(document).encode(), signing_key, *payload), trusted, ManifestSchemaError
    )
    assert "schema" in str(error)


def test_signed_manifest_that_is_not_json(trusted, signing_key):
    reject(signed(b"\x00\x01 not json", signing_key), trusted, ManifestSchemaError)


def test_non_canonical_signature_member(make_bundle, trusted):
    members = members_of(make_bundle())
    loose = json.dumps(json.loads(members[1][1]), indent=1).encode()
    data = write_members([members[0], (SIGNATURE_NAME, loose), members[2]])
    reject(data, trusted, BadSignatureError)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda d: d + b"junk", id="trailing bytes"),
        pytest.param(lambda d: b"junk" + d, id="leading bytes"),
        pytest.param(lambda d: d[: len(d) // 2], id="truncated"),
        pytest.param(lambda d: b"", id="empty"),
    ],
)
def test_malformed_containers(make_bundle, trusted, mangle: Callable[[bytes], bytes]):
    reject(mangle(make_bundle()), trusted, MalformedBundleError)


def test_members_out_of_canonical_order(make_bundle, trusted):
    members = members_of(make_bundle())
    reject(write_members([members[1], members[0], members[2]]), trusted, MalformedBundleError)


def test_zip_written_by_other_tools_is_refused(make_bundle, trusted):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members_of(make_bundle()):
            archive.writestr(name, content)
    reject(out.getvalue(), trusted, MalformedBundleError)


def test_missing_file_is_a_clear_error(tmp_path, trusted):
    with pytest.raises(MalformedBundleError, match="not found"):
        open_bundle(tmp_path / "absent.nsb", trusted)


def test_path_is_a_directory(tmp_path: Path, trusted):
    with pytest.raises(MalformedBundleError, match="directory"):
        open_bundle(tmp_path, trusted)
