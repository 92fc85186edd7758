"""Pieces shared by the admin routers: documented error answers, feed existence check."""

from __future__ import annotations

from sqlalchemy import Connection, select

from nonstop.server.errors import BadRequest
from nonstop.server.models import feeds
from nonstop.server.schemas import ErrorBody

Responses = dict[int | str, dict[str, object]]


def errors(**descriptions: str) -> Responses:
    """OpenAPI error answers, e.g. ``errors(e404="no such object")``: all are ``ErrorBody``."""
    return {
        int(code.removeprefix("e")): {"model": ErrorBody, "description": text}
        for code, text in descriptions.items()
    }


COMMON_ERRORS = errors(
    e400="the body is not JSON, or well-formed but not acceptable",
    e413="the body is over the server's size limit",
    e429="too many failed authentications",
)
ADMIN_ERRORS = COMMON_ERRORS | errors(
    e401="missing or invalid admin token",
    e403="the admin token lacks the needed scope",
    e404="no such object",
)


def bundle_file(description: str) -> Responses:
    """The 200 answer of an endpoint that returns a bundle file."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"content": {"application/octet-stream": binary}, "description": description}}


def ensure_feed(connection: Connection, name: str) -> None:
    found = connection.execute(select(feeds.c.name).where(feeds.c.name == name)).scalar()
    if found is None:
        raise BadRequest(f"no feed named {name!r}")
