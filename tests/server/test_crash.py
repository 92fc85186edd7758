"""SIGKILL during a burst of check-ins: nothing acknowledged is lost, nothing is duplicated.

Hosts check in concurrently, each with its own stream of check-in ids. The
server is killed mid-burst and restarted on the same database; every check-in
that got no answer is retried with the same id (as the agent does). Then the
database must hold exactly one row per check-in id the hosts sent and got
acknowledged, and each host's check-in counter must equal its row count.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from nonstop.server.db import Database
from nonstop.server.models import checkins, hosts
from tests.server.conftest import (
    LiveServer,
    create_admin_token,
    create_key,
    inventory,
    register,
    start_server,
)

HOSTS = 12


async def burst(url: str, host, sent: list[str], acked: set[str], stop_at: float) -> None:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {host.token}"}, timeout=10
    ) as client:
        while time.monotonic() < stop_at:
            checkin_id = str(uuid.uuid4())
            sent.append(checkin_id)
            body = inventory(
                host.id[:8],
                [{"build_id": uuid.uuid4().hex, "soname": "libc.so.6"}],
                checkin_id=checkin_id,
            )
            try:
                response = await client.post(f"/api/v1/hosts/{host.id}/checkin", json=body)
            except httpx.TransportError:
                return  # the server died: this id is in doubt
            assert response.status_code == 200, response.text
            acked.add(checkin_id)


@pytest.mark.timeout(300)
def test_sigkill_during_checkin_burst_loses_and_duplicates_nothing(
    backend: str,
    new_database_url: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
    trusted_dir: Path,
) -> None:
    url = new_database_url(backend)
    process = start_server(tmp_path_factory, url, trusted_dir, "--registrations-per-minute", "0")
    try:
        live = LiveServer(process, url, create_admin_token(process.data_dir, url))
        key = create_key(live)
        fleet = [register(live, key["key"]) for _ in range(HOSTS)]
        sent: dict[str, list[str]] = {host.id: [] for host in fleet}
        acked: dict[str, set[str]] = {host.id: set() for host in fleet}

        async def run() -> None:
            stop_at = time.monotonic() + 30
            tasks = [
                asyncio.create_task(burst(live.url, h, sent[h.id], acked[h.id], stop_at))
                for h in fleet
            ]
            # Let the burst get going, then kill the server with work in flight.
            while sum(len(a) for a in acked.values()) < 150:
                await asyncio.sleep(0.01)
            process.kill()
            await asyncio.gather(*tasks)

        asyncio.run(run())
        in_doubt = {
            host_id: [c for c in ids if c not in acked[host_id]] for host_id, ids in sent.items()
        }
        assert sum(len(a) for a in acked.values()) >= 150
        assert all(len(ids) <= 1 for ids in in_doubt.values())  # one request in flight per host
        assert any(in_doubt.values()), "the kill should catch at least one check-in in flight"

        process.start()
        replayed = 0
        for host in fleet:
            for checkin_id in in_doubt[host.id]:
                body = inventory(host.id[:8], checkin_id=checkin_id)
                with host.client(live) as client:
                    response = client.post(f"/api/v1/hosts/{host.id}/checkin", json=body)
                assert response.status_code == 200
                replayed += not response.json()["recorded"]
                acked[host.id].add(checkin_id)

        database = Database(url, pool_size=1)
        with database.engine.connect() as connection:
            rows = connection.execute(select(checkins.c.host_id, checkins.c.checkin_id)).all()
            counts = dict(connection.execute(select(hosts.c.id, hosts.c.checkin_count)).all())
            distinct = connection.execute(
                select(func.count(func.distinct(checkins.c.checkin_id)))
            ).scalar()
        database.dispose()
        stored: dict[str, set[str]] = {host.id: set() for host in fleet}
        for row in rows:
            stored[row.host_id].add(row.checkin_id)
        assert distinct == len(rows)  # no check-in id stored twice
        for host in fleet:
            assert stored[host.id] == acked[host.id]  # nothing lost, nothing invented
            assert counts[host.id] == len(acked[host.id])  # each counted exactly once
        print(
            f"{len(rows)} check-ins kept; {sum(map(len, in_doubt.values()))} in doubt, "
            f"{replayed} of those had committed"
        )
    finally:
        process.stop()
