"""Admin API tokens: created, listed and revoked from the command line (`nonstop admin token`).

Token management stays off the HTTP API on purpose: whoever can reach the
server's database (or its host) is the root of trust that mints admin tokens.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from nonstop.server import audit
from nonstop.server.auth import ADMIN_PREFIX, expand_scopes, new_credential
from nonstop.server.models import admin_tokens, utcnow


def create(connection: Connection, name: str, scopes: list[str]) -> tuple[str, str, list[str]]:
    """Create a token; (id, token shown once, scopes granted)."""
    granted = expand_scopes(scopes)
    credential = new_credential(ADMIN_PREFIX)
    connection.execute(
        insert(admin_tokens).values(
            id=credential.id,
            name=name,
            secret_hash=credential.secret_hash,
            scopes=granted,
            created_at=utcnow(),
        )
    )
    audit.record(
        connection,
        audit.CLI_ACTOR,
        "token.create",
        credential.id,
        {"name": name, "scopes": granted},
    )
    return credential.id, credential.token, granted


def listing(connection: Connection) -> list[dict[str, Any]]:
    """Every token, revoked ones included, oldest first: id, name, scopes, created_at,
    revoked_at (never the secret hash).
    """
    rows = connection.execute(
        select(
            admin_tokens.c.id,
            admin_tokens.c.name,
            admin_tokens.c.scopes,
            admin_tokens.c.created_at,
            admin_tokens.c.revoked_at,
        ).order_by(admin_tokens.c.created_at)
    )
    return [dict(row._mapping) for row in rows]


def revoke(connection: Connection, token_id: str) -> bool:
    """Revoke; False when no live token has this id."""
    done = connection.execute(
        update(admin_tokens)
        .where(admin_tokens.c.id == token_id, admin_tokens.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    if done.rowcount == 1:
        audit.record(connection, audit.CLI_ACTOR, "token.revoke", token_id, {})
        return True
    return False
