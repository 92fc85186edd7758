"""Operations endpoints: liveness with the schema revision, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from nonstop.server import metrics, migrate
from nonstop.server.api.common import errors
from nonstop.server.api.deps import Ctx
from nonstop.server.errors import Unavailable
from nonstop.server.schemas import Health

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz", response_model=Health, responses=errors(e503="the database does not answer")
)
def healthz(ctx: Ctx) -> Health:
    """200 when the database answers (a load balancer's health check)."""
    try:
        revision = migrate.current_revision(ctx.db.engine)
    except SQLAlchemyError as exc:
        raise Unavailable(f"database unavailable: {exc.__class__.__name__}") from None
    return Health(status="ok", schema_revision=revision)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics(ctx: Ctx) -> Response:
    """Prometheus text exposition (restrict access at the load balancer if needed)."""
    body = await run_in_threadpool(metrics.render, ctx.host_states)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
