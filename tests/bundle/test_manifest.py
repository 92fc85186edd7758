"""The manifest schema and its typed form."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from nonstop.bundle import Fix, FunctionPatch, KernelTarget, Manifest, describe_payload
from nonstop.bundle.errors import ManifestSchemaError, UnsupportedFormatVersionError
from nonstop.bundle.manifest import manifest_schema
from tests.conftest import sample_manifest


def kernel_manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "kind": "kernel",
        "target": KernelTarget(release="6.1.0-26-amd64", build_id="cd" * 20),
        "level": 1,
        "functions": (FunctionPatch(target="cmdline_proc_show", object="vmlinux"),),
        "payload": (describe_payload("livepatch_demo.ko", "module", b"ko"),),
        "effective_version": "6.1.112-1+nonstop1",
        "builder": "tests",
        "fixes": (Fix(title="demo", cves=("CVE-2024-1234",), references=("https://x",)),),
    }
    fields.update(changes)
    return Manifest(**fields)


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(manifest_schema())


@pytest.mark.parametrize("manifest", [sample_manifest({"patch.o": b"x"}), kernel_manifest()])
def test_roundtrip_through_canonical_bytes(manifest):
    data = manifest.to_json_bytes()
    assert Manifest.from_json_bytes(data) == manifest
    assert data == Manifest.from_json_bytes(data).to_json_bytes()
    assert b"\n" not in data and b", " not in data


def test_function_code_digest_is_optional_and_checked():
    old = sample_manifest({"patch.o": b"x"}).to_json_bytes()
    assert b"original_sha256" not in old  # manifests without it keep their exact bytes
    digest = "0f" * 32
    function = FunctionPatch("parse_record", "parse_record_v2", original_sha256=digest)
    recorded = sample_manifest({"patch.o": b"x"}, functions=(function,))
    assert Manifest.from_json_bytes(recorded.to_json_bytes()).functions == (function,)
    document = json.loads(recorded.to_json_bytes())
    document["functions"][0]["original_sha256"] = "not a digest"
    with pytest.raises(ManifestSchemaError, match="functions/0/original_sha256"):
        Manifest.from_json_bytes(json.dumps(document).encode())


def test_kind_and_target_must_agree():
    document = json.loads(kernel_manifest().to_json_bytes())
    document["kind"] = "userspace"
    with pytest.raises(ManifestSchemaError):
        Manifest.from_json_bytes(json.dumps(document).encode())


def test_kernel_target_needs_build_id_or_digest():
    document = json.loads(kernel_manifest().to_json_bytes())
    del document["target"]["build_id"]
    with pytest.raises(ManifestSchemaError):
        Manifest.from_json_bytes(json.dumps(document).encode())


def test_userspace_bundle_needs_exactly_one_object_payload():
    manifest = sample_manifest({"symbols.json": b"{}"})
    with pytest.raises(ManifestSchemaError):
        manifest.to_json_bytes()


def test_payload_names_must_be_unique():
    entries = (
        describe_payload("patch.o", "object", b"x"),
        describe_payload("patch.o", "symbols", b"y"),
    )
    with pytest.raises(ManifestSchemaError, match="unique"):
        sample_manifest({"patch.o": b"x"}, payload=entries).to_json_bytes()


def test_format_version_is_checked_before_the_schema():
    with pytest.raises(UnsupportedFormatVersionError):
        Manifest.from_json_bytes(b'{"format_version": 7}')
    with pytest.raises(ManifestSchemaError, match="JSON object"):
        Manifest.from_json_bytes(b"[1]")


def test_kernel_target_matching():
    built = KernelTarget(release="6.1.0-26-amd64", build_id="aa" * 20)
    assert built.matches(KernelTarget(release="6.1.0-26-amd64", build_id="aa" * 20))
    assert not built.matches(KernelTarget(release="6.1.0-26-amd64", build_id="bb" * 20))
    assert not built.matches(KernelTarget(release="6.1.0-27-amd64", build_id="aa" * 20))
    by_digest = KernelTarget(release="r", version_digest="1" * 64)
    assert by_digest.matches(KernelTarget(release="r", build_id="aa" * 20, version_digest="1" * 64))
    assert not by_digest.matches(KernelTarget(release="r", version_digest="2" * 64))
