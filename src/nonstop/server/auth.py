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
    id: str
    secret_hash: str
    token: str  # shown once to its owner, never stored


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_id() -> str:
    return secrets.token_hex(_ID_HEX // 2)


def new_credential(prefix: str, credential_id: str | None = None) -> NewCredential:
    cid = credential_id or new_id()
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
