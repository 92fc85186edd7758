"""Property: no mutation of a valid bundle is ever accepted, and only documented errors escape.

The plain test runs in every `make test`; `make fuzz` (marker `fuzz`) runs
12,000 mutations, the count the bundle format must survive.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonstop.bundle import SigningKey, TrustedKeys, open_bundle, pack
from nonstop.bundle.container import SIGNATURE_NAME, encode_signature
from nonstop.bundle.errors import BundleError
from nonstop.bundle.zipfmt import read_members, write_members
from tests.conftest import sample_manifest

FILES = {"patch.o": b"\x7fELF" + bytes(range(200)), "symbols.json": b'{"static_helper": 4096}'}


def original(key: SigningKey) -> bytes:
    return pack(sample_manifest(FILES), FILES, key)


@st.composite
def byte_mutation(draw: Any, data: bytes) -> bytes:
    size = len(data)
    position = draw(st.integers(0, size - 1))
    operation = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate"]))
    if operation == "flip":
        value = data[position] ^ draw(st.integers(1, 255))
        return data[:position] + bytes([value]) + data[position + 1 :]
    if operation == "overwrite":
        chunk = draw(st.binary(min_size=1, max_size=16))
        return data[:position] + chunk + data[position + len(chunk) :]
    if operation == "insert":
        return data[:position] + draw(st.binary(min_size=1, max_size=16)) + data[position:]
    if operation == "delete":
        return data[:position] + data[position + draw(st.integers(1, 64)) :]
    return data[:position]


@st.composite
def member_mutation(draw: Any, data: bytes) -> bytes:
    """Well-formed containers with wrong contents: what an attacker with a ZIP tool makes."""
    members = [(name, bytes(content)) for name, content in read_members(data, 100)]
    index = draw(st.integers(0, len(members) - 1))
    operation = draw(
        st.sampled_from(
            [
                "replace",
                "drop",
                "duplicate",
                "rename",
                "add",
                "edit_json",
                "resign_other_key",
                "swap",
            ]
        )
    )
    name, content = members[index]
    if operation == "replace":
        members[index] = (name, draw(st.binary(max_size=300)))
    elif operation == "drop":
        del members[index]
    elif operation == "duplicate":
        members.insert(index, members[index])
    elif operation == "rename":
        new = draw(st.sampled_from(["../x", "a/b", "manifest.json", "patch.o", "zz", ".x", "x y"]))
        members[index] = (new, content)
    elif operation == "add":
        members.insert(draw(st.integers(0, len(members))), ("zz.bin", draw(st.binary(max_size=64))))
    elif operation == "swap":
        other = draw(st.integers(0, len(members) - 1))
        members[index], members[other] = members[other], members[index]
    elif operation == "edit_json":
        document = json.loads(members[0][1])
        key = draw(st.sampled_from(sorted(document)))
        document[key] = draw(st.one_of(st.integers(), st.text(max_size=8), st.none()))
        members[0] = (members[0][0], json.dumps(document).encode())
    else:
        stranger = SigningKey.generate()
        signature = encode_signature(stranger.key_id, stranger.sign(members[0][1]))
        members[1] = (SIGNATURE_NAME, signature)
    return write_members(members)


def assert_never_accepted(mutated: bytes, pristine: bytes, trusted: TrustedKeys) -> None:
    if mutated == pristine:
        return
    try:
        bundle = open_bundle(mutated, trusted)
    except BundleError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    raise AssertionError(f"mutated bundle accepted: level {bundle.manifest.level}")


def run_property(examples: int, key: SigningKey, trusted: TrustedKeys) -> None:
    pristine = original(key)
    assert open_bundle(pristine, trusted).files == FILES

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.one_of(byte_mutation(pristine), member_mutation(pristine)))
    def check(mutated: bytes) -> None:
        assert_never_accepted(mutated, pristine, trusted)

    check()


def test_mutated_bundles_are_never_accepted(signing_key, trusted):
    run_property(1500, signing_key, trusted)


@pytest.mark.fuzz
def test_mutated_bundles_are_never_accepted_12k(signing_key, trusted):
    run_property(12000, signing_key, trusted)
