"""Several worker processes behind one listening socket: one fleet-wide view of metrics."""

from __future__ import annotations

import json
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


def test_every_worker_writes_its_logs(
    new_database_url: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
    trusted_dir: Path,
) -> None:
    """Workers are fresh interpreters: each must set up its own logging, not only the parent."""
    url = new_database_url("sqlite")
    with live_server(tmp_path_factory, url, trusted_dir, "--workers", "2") as live:
        parent = live.process.process
        assert parent is not None
        for _ in range(10):
            with live.client() as client:  # new connections: spread over both workers
                assert client.get("/healthz").status_code == 200
        lines = [json.loads(line) for line in live.process.log().splitlines() if line[:1] == "{"]
    ready = {line["pid"] for line in lines if line["msg"] == "server process ready"}
    requests = [line for line in lines if line["msg"] == "request"]
    assert len(ready) == 2 and parent.pid not in ready
    assert len(requests) >= 10 and {line["pid"] for line in requests} <= ready
