"""The fleet benchmark's lean HTTP client: it must read answers exactly as sent.

The benchmark's figures rest on it, so it is checked against a real
`nonstop serve` (a 422 and a 200 with bodies of different sizes on one
keep-alive connection) and against the fixed-answer server it weighs clients
with.
"""

from __future__ import annotations

import asyncio
import json

from bench.leanhttp import FixedAnswerServer, LeanConnection, request_bytes

from tests.server.conftest import LiveServer, create_key, inventory, register
from tests.server.pgcluster import free_port


async def exchange(url_port: int, requests: list[bytes]) -> list[tuple[int, bytes]]:
    connection = await LeanConnection.open("127.0.0.1", url_port)
    try:
        return [await connection.send(request) for request in requests]
    finally:
        await connection.close()


def test_lean_client_reads_every_answer_on_one_connection(server: LiveServer) -> None:
    host = register(server, create_key(server)["key"])
    auth = {"Authorization": f"Bearer {host.token}"}
    path = f"/api/v1/hosts/{host.id}/checkin"
    good = inventory("lean", [{"build_id": "ab" * 20, "soname": "libx.so.1"}])
    requests = [
        request_bytes("POST", path, "localhost", json.dumps(good).encode(), auth),
        request_bytes("POST", path, "localhost", b'{"hostname": 1}', auth),
        request_bytes("POST", path, "localhost", json.dumps(good).encode(), auth),
    ]
    answers = asyncio.run(exchange(server.process.port, requests))
    assert [status for status, _ in answers] == [200, 422, 200]
    first, refused, replay = (json.loads(body) for _, body in answers)
    assert first["recorded"] is True and replay["recorded"] is False
    assert refused["detail"][0]["loc"][0] == "body"


def test_fixed_answer_server_answers_each_request() -> None:
    answer = json.dumps({"ok": True}).encode()
    fixed = FixedAnswerServer(free_port(), answer)
    try:
        port = int(fixed.url.rsplit(":", 1)[1])
        request = request_bytes("POST", "/x", "localhost", b"{}" * 3000)
        assert asyncio.run(exchange(port, [request] * 3)) == [(200, answer)] * 3
    finally:
        fixed.stop()
