"""Several worker processes behind one listening socket: one fleet-wide view of metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.server.conftest import checkin, create_key, inventory, live_server, register


def test_two_workers_share_database_and_sum_metrics(
    backend: str,
    new_database_url: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
    trusted_dir: Path,
) -> None:
    url = new_database_url(backend)
    with live_server(tmp_path_factory, url, trusted_dir, "--workers", "2") as live:
        host = register(live, create_key(live)["key"])
        for _ in range(6):
            checkin(live, host, inventory("w"))  # new connections: spread over both workers
        with live.admin() as admin:
            assert admin.get(f"/api/v1/admin/hosts/{host.id}").json()["checkin_count"] == 6
        with live.client() as client:
            scrapes = {client.get("/metrics").text for _ in range(4)}
        for text in scrapes:
            assert 'nonstop_checkins_total{result="recorded"} 6.0' in text
            assert 'nonstop_hosts{state="active"}' in text
