"""Admin: feeds (list, create, change the release delay)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import Connection, insert, select, update

from nonstop.server import audit
from nonstop.server.api.common import ADMIN_ERRORS, errors
from nonstop.server.api.deps import Admin, Ctx, require_scope
from nonstop.server.errors import Conflict, NotFound
from nonstop.server.models import feeds, utcnow
from nonstop.server.schemas import FeedCreate, FeedList, FeedName, FeedUpdate, FeedView

router = APIRouter(prefix="/api/v1/admin/feeds", tags=["admin: feeds"], responses=ADMIN_ERRORS)
Reader = Annotated[Admin, Depends(require_scope("feeds:read"))]
Writer = Annotated[Admin, Depends(require_scope("feeds:write"))]


def _get(connection: Connection, name: str) -> Any:
    row = connection.execute(select(feeds).where(feeds.c.name == name)).first()
    if row is None:
        raise NotFound(f"no feed {name}")
    return row


def _view(row: Any) -> FeedView:
    return FeedView(
        name=row.name,
        description=row.description,
        delay_hours=row.delay_hours,
        created_at=row.created_at,
    )


@router.get("", response_model=FeedList)
def list_feeds(ctx: Ctx, admin: Reader) -> FeedList:
    """All feeds, by name."""
    with ctx.db.read() as connection:
        return FeedList(
            feeds=[_view(row) for row in connection.execute(select(feeds).order_by(feeds.c.name))]
        )


@router.post(
    "",
    status_code=201,
    response_model=FeedView,
    responses=errors(e409="a feed with this name exists"),
)
def create_feed(body: FeedCreate, ctx: Ctx, admin: Writer) -> FeedView:
    """Create a feed; delay_hours holds each bundle back that long after its publication."""
    with ctx.db.write() as connection:
        if connection.execute(select(feeds.c.name).where(feeds.c.name == body.name)).first():
            raise Conflict(f"feed {body.name} exists")
        connection.execute(insert(feeds).values(**body.model_dump(), created_at=utcnow()))
        audit.record(connection, admin.actor, "feed.create", body.name, body.model_dump())
        view = _view(_get(connection, body.name))
    ctx.catalog.invalidate()
    return view


@router.patch("/{name}", response_model=FeedView)
def update_feed(name: FeedName, body: FeedUpdate, ctx: Ctx, admin: Writer) -> FeedView:
    """Change a feed's description or delay (hours between publication and visibility)."""
    changes = {
        key: value
        for key, value in body.model_dump(exclude_unset=True).items()
        if value is not None
    }
    with ctx.db.write() as connection:
        _get(connection, name)
        if changes:
            connection.execute(update(feeds).where(feeds.c.name == name).values(**changes))
            audit.record(connection, admin.actor, "feed.update", name, changes)
        view = _view(_get(connection, name))
    ctx.catalog.invalidate()
    return view
