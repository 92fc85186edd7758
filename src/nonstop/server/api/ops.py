"""Operations endpoints: health (the database answers and takes writes), Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from nonstop.server import metrics, migrate
from nonstop.server.api.common import errors
from nonstop.server.api.deps import Ctx
from nonstop.server.db import NotWritable
from nonstop.server.errors import Unavailable
from nonstop.server.schemas import Health

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=Health,
    responses=errors(e503="the database does not answer, or does not take writes"),
)
def healthz(ctx: Ctx) -> Health:
    """200 when the database answers and could take a write now (a load balancer's check)."""
    try:
        revision = migrate.current_revision(ctx.db.engine)
        ctx.db.probe_writable()
    except SQLAlchemyError as exc:
        raise Unavailable(f"database unavailable: {exc.__class__.__name__}") from None
    except NotWritable as exc:
        raise Unavailable(f"database not writable: {exc}") from None
    return Health(status="ok", schema_revision=revision)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics(ctx: Ctx) -> Response:
    """Prometheus text exposition (restrict access at the load balancer if needed)."""
    body = await run_in_threadpool(metrics.render, ctx.host_states, ctx.findings)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
