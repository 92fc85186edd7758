"""Ed25519 signing keys, trusted public keys and their key ids.

A key id is the first 16 hex digits of the SHA-256 of the raw 32-byte public
key. It is printed by every command that uses a key, so an operator can tell
which vendor key signed a bundle and which keys a host trusts.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nonstop.bundle.errors import KeyFileError
from nonstop.files import read_bounded

PRIVATE_KEY_NAME = "signing.key"
PUBLIC_KEY_NAME = "signing.pub"
_MAX_KEY_FILE = 16 * 1024


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """16 lowercase hex digits: the start of the SHA-256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """A public key bundles may be verified with; SOURCE says where it came from (its file)."""

    key: Ed25519PublicKey
    key_id: str
    source: str

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when SIGNATURE is this key's over DATA exactly (False, never an exception,
        for a bad one)."""
        try:
            self.key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        """The SubjectPublicKeyInfo PEM written as signing.pub."""
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True)
class SigningKey:
    """A vendor's private key (it never leaves the build machine) and its key id."""

    key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def generate(cls) -> SigningKey:
        key = Ed25519PrivateKey.generate()
        return cls(key, key_id_of(key.public_key()))

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of DATA."""
        return self.key.sign(data)

    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), self.key_id, "signing key")


def _read_key_file(path: Path) -> bytes:
    return read_bounded(path, _MAX_KEY_FILE, "key file", KeyFileError)


def load_signing_key(path: Path) -> SigningKey:
    """Load a private key; refuse one that other users can read."""
    data = _read_key_file(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"signing key {path} is accessible by other users (mode {mode & 0o777:o}); "
            "run chmod 600 on it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"not a PEM private key: {path}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"not an Ed25519 private key: {path}")
    return SigningKey(key, key_id_of(key.public_key()))


def load_public_key(path: Path) -> PublicKey:
    """The Ed25519 public key in the PEM file PATH; KeyFileError when it is unreadable, too
    large or not one."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyFileError(f"not a PEM public key: {path}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"not an Ed25519 public key: {path}")
    return PublicKey(key, key_id_of(key), str(path))


def generate_keypair(out_dir: Path) -> SigningKey:
    """Write DIR/signing.key (0600) and DIR/signing.pub; never overwrite a key.

    KeyFileError names the file when the directory or a key cannot be written."""
    try:
        return _write_keypair(out_dir)
    except OSError as exc:
        where = exc.filename or out_dir
        raise KeyFileError(f"cannot write {where}: {exc.strerror}") from None


def _write_keypair(out_dir: Path) -> SigningKey:
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / PRIVATE_KEY_NAME
    public_path = out_dir / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"refusing to overwrite existing key file {path}")
    signing = SigningKey.generate()
    private_pem = signing.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL + mode at creation: the private key is never readable by others, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(signing.public().pem())
    return signing


class TrustedKeys:
    """The set of public keys a reader accepts bundles from, indexed by key id."""

    def __init__(self, keys: list[PublicKey]) -> None:
        self._by_id = {key.key_id: key for key in keys}

    @classmethod
    def from_dir(cls, directory: Path) -> TrustedKeys:
        """Every ``*.pub`` file in DIRECTORY is a trusted key; KeyFileError when the directory
        is missing or any of them is not a usable key (none is skipped silently)."""
        if not directory.is_dir():
            raise KeyFileError(f"trusted keys directory not found: {directory}")
        return cls([load_public_key(path) for path in sorted(directory.glob("*.pub"))])

    def get(self, key_id: str) -> PublicKey | None:
        return self._by_id.get(key_id)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)
