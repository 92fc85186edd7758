"""Signing keys: generation, permissions, key ids, trusted-key directories."""

from __future__ import annotations

import re
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nonstop.bundle import TrustedKeys, generate_keypair, load_signing_key
from nonstop.bundle.errors import KeyFileError
from nonstop.bundle.keys import load_public_key


def test_generate_writes_private_key_0600_and_matching_public_key(tmp_path):
    key = generate_keypair(tmp_path / "k")
    private = tmp_path / "k" / "signing.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{16}", key.key_id)
    assert load_signing_key(private).key_id == key.key_id
    assert load_public_key(tmp_path / "k" / "signing.pub").key_id == key.key_id


def test_signature_roundtrip_and_key_binding(tmp_path):
    key = generate_keypair(tmp_path / "a")
    other = generate_keypair(tmp_path / "b")
    signature = key.sign(b"manifest")
    assert key.public().verify(signature, b"manifest")
    assert not key.public().verify(signature, b"manifesT")
    assert not other.public().verify(signature, b"manifest")
    assert key.key_id != other.key_id


def test_generate_never_overwrites(tmp_path):
    generate_keypair(tmp_path)
    with pytest.raises(KeyFileError, match="overwrite"):
        generate_keypair(tmp_path)


def test_group_readable_private_key_is_refused(tmp_path):
    generate_keypair(tmp_path)
    (tmp_path / "signing.key").chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(tmp_path / "signing.key")


def test_missing_and_foreign_key_files(tmp_path):
    with pytest.raises(KeyFileError, match="not found"):
        load_signing_key(tmp_path / "absent.key")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = tmp_path / "rsa.pub"
    pub.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="not an Ed25519"):
        load_public_key(pub)
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    with pytest.raises(KeyFileError, match="not a PEM"):
        load_public_key(junk)


def test_trusted_keys_from_directory(tmp_path):
    first = generate_keypair(tmp_path / "one")
    second = generate_keypair(tmp_path / "two")
    trusted_dir = tmp_path / "trusted"
    trusted_dir.mkdir()
    for name, source in (("a.pub", "one"), ("b.pub", "two")):
        (trusted_dir / name).write_bytes((tmp_path / source / "signing.pub").read_bytes())
    (trusted_dir / "README").write_text("not a key, ignored")
    trusted = TrustedKeys.from_dir(trusted_dir)
    assert trusted.key_ids == sorted([first.key_id, second.key_id])
    assert trusted.get("0" * 16) is None
    with pytest.raises(KeyFileError, match="not found"):
        TrustedKeys.from_dir(tmp_path / "nowhere")
