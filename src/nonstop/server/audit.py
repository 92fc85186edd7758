"""The audit log: one row per admin action, written in the same transaction as the action."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select

from nonstop.server.models import audit_log, utcnow

CLI_ACTOR = "cli"


def record(
    connection: Connection, actor: str, action: str, target: str, details: dict[str, Any]
) -> None:
    """Add an audit entry on CONNECTION: it commits or rolls back with the action it records.

    DETAILS must be JSON-serializable; it must never hold a secret.
    """
    connection.execute(
        insert(audit_log).values(
            at=utcnow(), actor=actor, action=action, target=target, details=details
        )
    )


def entries(connection: Connection, limit: int, before: int | None) -> list[dict[str, Any]]:
    """Newest first; BEFORE is an entry id for paging back."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(audit_log.c.id < before)
    return [dict(row._mapping) for row in connection.execute(query)]
