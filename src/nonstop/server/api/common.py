"""Pieces shared by the admin routers: documented error answers, feed existence check."""

from __future__ import annotations

from sqlalchemy import Connection, select

from nonstop.server.errors import BadRequest
from nonstop.server.models import feeds
from nonstop.server.schemas import ErrorBody

ADMIN_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "the request is well-formed but not acceptable"},
    401: {"model": ErrorBody, "description": "missing or invalid admin token"},
    403: {"model": ErrorBody, "description": "the admin token lacks the needed scope"},
    404: {"model": ErrorBody, "description": "no such object"},
    413: {"model": ErrorBody, "description": "the body is over the server's size limit"},
    429: {"model": ErrorBody, "description": "too many failed authentications"},
}


def ensure_feed(connection: Connection, name: str) -> None:
    found = connection.execute(select(feeds.c.name).where(feeds.c.name == name)).scalar()
    if found is None:
        raise BadRequest(f"no feed named {name!r}")
