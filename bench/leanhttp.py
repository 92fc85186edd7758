"""A lean HTTP/1.1 client for the fleet benchmark, and a fixed-answer server to weigh clients.

httpx costs about 4 ms of CPU per request on these machines, more than the
server it measures; on a 2-core box the client then takes the CPU the server
would need. ``LeanConnection`` does only what the benchmark needs: one
keep-alive connection over asyncio streams, requests sent as ready-made bytes,
answers read by ``Content-Length`` (uvicorn always sends it for these
endpoints). It is a measuring tool, not a general HTTP client.

``FixedAnswerServer`` answers every request with the same bytes and does no
other work, so the CPU a client spends against it is that client's floor per
request.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from dataclasses import dataclass
from typing import Any


class ProtocolError(Exception):
    """The answer is not HTTP/1.1 with a Content-Length."""


def request_bytes(
    method: str, path: str, host: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    """One complete HTTP/1.1 request with a JSON body, ready to write on a connection."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("ascii") + body


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ProtocolError(f"answer without Content-Length: {head[:80]!r}")


@dataclass
class LeanConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, host: str, port: int) -> LeanConnection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Write one request, read its answer: (status, body)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            raise ProtocolError(f"not an HTTP/1.1 answer: {head[:80]!r}")
        body = await self.reader.readexactly(_content_length(head))
        return int(head[9:12]), body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class _FixedAnswer(asyncio.Protocol):
    """Reads requests with Content-Length bodies; answers each with the same bytes."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            total = end + 4 + _content_length(self.buffer[: end + 4])
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            assert self.transport is not None
            self.transport.write(self.answer)


def _serve_fixed(port: int, body: bytes, ready: Any) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: _FixedAnswer(answer), "127.0.0.1", port
        )
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class FixedAnswerServer:
    """A separate process on loopback answering every request with BODY (a JSON document)."""

    def __init__(self, port: int, body: bytes) -> None:
        self.url = f"http://127.0.0.1:{port}"
        ready = multiprocessing.Event()
        self.process = multiprocessing.Process(
            target=_serve_fixed, args=(port, body, ready), daemon=True
        )
        self.process.start()
        if not ready.wait(30):
            self.stop()
            raise RuntimeError("fixed-answer server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)
