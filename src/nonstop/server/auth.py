"""Credentials: host tokens, admin API tokens with scopes, registration keys.

Every credential is ``<prefix>_<id>_<secret>``: the id finds the row, the
secret is 256 random bits stored only as its SHA-256. A fast hash is right for
random high-entropy secrets (no dictionary to guess from), and comparing the
hashes with ``hmac.compare_digest`` keeps the check constant-time. The id in
front lets the server look the row up by primary key instead of by secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

HOST_PREFIX = "nsh"
ADMIN_PREFIX = "nsa"
KEY_PREFIX = "nsk"
_ID_HEX = 32
_MAX_CREDENTIAL = 200

# Resource scopes; "<resource>:write" implies "<resource>:read".
SCOPES = (
    "keys:read",
    "keys:write",
    "bundles:read",
    "bundles:write",
    "feeds:read",
    "feeds:write",
    "hosts:read",
    "hosts:write",
    "reports:read",
    "audit:read",
)


class ScopeError(ValueError):
    """A scope name that does not exist."""


@dataclass(frozen=True)
class NewCredential:
    """A credential just minted: the id and hash to store, and the token to hand over once."""

    id: str
    secret_hash: str
    token: str  # shown once to its owner, never stored


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of SECRET: all the server stores of a credential's secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_id() -> str:
    """A random 128-bit credential id: 32 lowercase hex digits, as ``split_credential`` wants."""
    return secrets.token_hex(_ID_HEX // 2)


def new_credential(prefix: str) -> NewCredential:
    """A fresh ``<PREFIX>_<id>_<secret>`` credential (random id and 256-bit secret)."""
    cid = new_id()
    secret = secrets.token_urlsafe(32)
    return NewCredential(cid, hash_secret(secret), f"{prefix}_{cid}_{secret}")


def split_credential(prefix: str, token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed credential with PREFIX, else None."""
    if len(token) > _MAX_CREDENTIAL or not token.startswith(prefix + "_"):
        return None
    cid, sep, secret = token[len(prefix) + 1 :].partition("_")
    if not sep or not secret or len(cid) != _ID_HEX:
        return None
    if any(c not in "0123456789abcdef" for c in cid):
        return None
    return cid, secret


def credential_key(prefix: str, credential_id: str) -> str:
    """What names a credential in memory and logs: its prefix and public id, never its secret."""
    return f"{prefix}_{credential_id}"


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Whether SECRET hashes to STORED_HASH, compared in constant time."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def expand_scopes(requested: list[str]) -> list[str]:
    """Validate scope names; ``*`` means every scope."""
    if "*" in requested:
        return list(SCOPES)
    unknown = sorted(set(requested) - set(SCOPES))
    if unknown:
        raise ScopeError(f"unknown scope {unknown[0]!r}; known: {', '.join(SCOPES)} or *")
    return sorted(set(requested), key=SCOPES.index)


def scope_granted(granted: list[str], needed: str) -> bool:
    """Whether the GRANTED scopes allow NEEDED: a resource's write scope also grants its read."""
    if needed in granted:
        return True
    resource, _, action = needed.partition(":")
    return action == "read" and f"{resource}:write" in granted


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class KnownHostSecrets:
    """Secret hashes of host tokens this process saw valid: the check-in's owner test.

    The check-in must know a token is its host's before it reads the body, and a
    database read for that costs about a fifth of a check-in's server CPU. A host's
    secret never changes, so a token that matches a remembered hash is its host's;
    this is not the authority (the check-in's write checks the token again, and a
    host unregistered meanwhile is refused there and forgotten here). At most
    MAX_ENTRIES hosts (about 250 bytes each); the oldest are dropped first.
    """

    MAX_ENTRIES = 131_072

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._hashes: dict[str, str] = {}
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def matches(self, host_id: str, secret: str) -> bool:
        """True only if HOST_ID's remembered hash is SECRET's (unknown: False; ask the database)."""
        known = self._hashes.get(host_id)
        return known is not None and secret_matches(secret, known)

    def remember(self, host_id: str, secret_hash: str) -> None:
        """Remember HOST_ID's secret hash, taken from a token just verified (or just issued).

        Past ``max_entries`` the earliest remembered hosts go first (a refresh keeps its place).
        """
        with self._lock:
            self._hashes[host_id] = secret_hash
            while len(self._hashes) > self._max_entries:
                del self._hashes[next(iter(self._hashes))]

    def forget(self, host_id: str) -> None:
        """Drop HOST_ID (unregistered, or its token refused): its next check-in reads the row."""
        with self._lock:
            self._hashes.pop(host_id, None)
