"""Housekeeping each server process runs in the background: pruning old check-in history,
and recomputing the fleet's vulnerability findings.

Check-in rows exist to record each check-in id once (a retry is recognised)
and as recent history; after ``checkin_history_days`` they serve neither. Every
replica prunes, which is harmless: the DELETE is idempotent.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import delete
from starlette.concurrency import run_in_threadpool

from nonstop.server.db import Database
from nonstop.server.logs import logger
from nonstop.server.models import checkins, utcnow
from nonstop.server.vulnerabilities import FLEET_TTL_SECONDS, Vulnerabilities

PRUNE_EVERY_SECONDS = 3600.0


def prune_checkins(db: Database, keep_days: int) -> int:
    """Delete check-in rows older than KEEP_DAYS; return how many went."""
    with db.write() as connection:
        done = connection.execute(
            delete(checkins).where(checkins.c.received_at < utcnow() - timedelta(days=keep_days))
        )
    return done.rowcount


async def prune_forever(db: Database, keep_days: int) -> None:
    """Prune check-ins older than KEEP_DAYS every PRUNE_EVERY_SECONDS (the first round one
    interval after start) in a worker thread, until cancelled. A failed round is logged and
    does not stop the loop.
    """
    while True:
        await asyncio.sleep(PRUNE_EVERY_SECONDS)
        try:
            removed = await run_in_threadpool(prune_checkins, db, keep_days)
        except Exception:  # a failed round is retried next time; the server keeps serving
            logger().exception("pruning check-in history failed")
            continue
        logger().info("pruned check-in history", extra={"fields": {"rows": removed}})


async def recompute_findings_forever(vulnerabilities: Vulnerabilities) -> None:
    """Keep the fleet's findings computed (metrics and fleet reports read them): soon after
    start, then whenever they are older than FLEET_TTL_SECONDS or the data changed."""
    await asyncio.sleep(1.0)
    while True:
        try:
            await run_in_threadpool(vulnerabilities.fleet)
        except Exception:  # retried next round; requests compute what they need themselves
            logger().exception("recomputing the fleet's vulnerability findings failed")
        await asyncio.sleep(FLEET_TTL_SECONDS / 2)
