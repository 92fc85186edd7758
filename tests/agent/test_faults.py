"""A patch server that is down, stalls, answers garbage, or serves a tampered bundle.

A real server cannot be made to misbehave like this, so a small real HTTP
server on loopback plays it (and a socket that accepts and never answers, and
a port nobody listens on). Each time the agent must say so in one line, apply
nothing from it, and keep the state it had: the running process stays at its
level, the recorded levels and the registration are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from nonstop.agent.client import ServerClient, ServerError, backoff_delay
from tests.agent.conftest import Agent, level_of, nsfix_build_id

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="patching running processes needs root (ptrace); run as root"
)
HOST_ID = "ab" * 16


class FakeServer:
    """Answers check-ins and downloads with whatever the test sets (status, body)."""

    def __init__(self) -> None:
        self.checkin: Callable[[dict[str, Any]], tuple[int, bytes]] = lambda body: (500, b"")
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                fake.requests.append(self.path)
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                self.answer(*fake.checkin(body))

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                data = fake.files.get(self.path.rsplit("/", 1)[-1])
                self.answer(200, data) if data is not None else self.answer(404, b"{}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def offer(self, data: bytes, build_id: str, level: int, sha256: str | None = None) -> None:
        """Check-ins answer: apply this bundle to the nsfix target."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        self.files[digest] = data

        def answer(body: dict[str, Any]) -> tuple[int, bytes]:
            decision = {
                "target": f"userspace:{build_id}",
                "kind": "userspace",
                "name": "libnsfix.so.1",
                "applied_level": None,
                "action": "apply",
                "reason": f"level {level} available",
                "bundle": {
                    "sha256": digest,
                    "level": level,
                    "size": len(data),
                    "effective_version": "x",
                    "url": f"/api/v1/bundles/{digest}",
                },
            }
            document = {
                "host_id": HOST_ID,
                "checkin_id": body["checkin_id"],
                "recorded": True,
                "feed": "test",
                "server_time": "2030-01-01T00:00:00Z",
                "next_checkin_seconds": 3600,
                "targets": [decision],
            }
            return 200, json.dumps(document).encode()

        self.checkin = answer

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture
def stalling_url() -> Iterator[str]:
    """A socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def closed_port_url() -> str:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def patched_agent(agent: Agent, start_target, bundles) -> tuple[Agent, Any]:
    """A target at level 1 (applied from a local bundle), the agent registered (by hand)."""
    target = start_target(busy=1, sleepers=1)
    agent.json("--lib-update", "--bundle", str(bundles[1]))
    assert level_of(target) == "1000"
    agent.state.mkdir(exist_ok=True)
    return agent, target


def point_at(agent: Agent, url: str) -> None:
    record = {
        "server_url": url,
        "host_id": HOST_ID,
        "token": "nsh_" + HOST_ID + "_secret-token-value",
        "key_id": "cd" * 16,
        "feed": "test",
        "hostname": "test-host",
        "registered_at": "2030-01-01T00:00:00Z",
    }
    path = agent.state / "registration.json"
    path.write_text(json.dumps(record))
    path.chmod(0o600)


def snapshot(agent: Agent) -> dict[str, str]:
    names = ["userspace.json", "registration.json", "kernel.json"]
    return {n: (agent.state / n).read_text() for n in names if (agent.state / n).exists()}


def assert_nothing_changed(agent: Agent, target: Any, before: dict[str, str]) -> None:
    assert level_of(target) == "1000"
    assert snapshot(agent) == before
    cached = list((agent.directory / "cache" / "bundles").glob("*.nsb"))
    assert len(cached) == 1  # only the level 1 bundle applied before


def run_failing(agent: Agent, *args: str) -> str:
    done = agent.run(*args, timeout=120)
    assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
    assert "secret-token-value" not in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_server_down(patched_agent) -> None:
    agent, target = patched_agent
    point_at(agent, closed_port_url())
    before = snapshot(agent)
    error = run_failing(agent, "--auto-update")
    assert "cannot reach the patch server" in error and "after 2 tries" in error
    assert_nothing_changed(agent, target, before)
    last = agent.json("--server-info")["last_error"]
    assert "cannot reach" in last["message"]


def test_server_that_accepts_and_stalls(patched_agent, stalling_url) -> None:
    agent, target = patched_agent
    agent.configure(server_timeout_seconds=1, server_attempts=1)
    point_at(agent, stalling_url)
    before = snapshot(agent)
    error = run_failing(agent, "--lib-update")
    assert "did not answer within 1 s" in error
    assert_nothing_changed(agent, target, before)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{this is not json", "answered malformed JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "answered malformed JSON"),  # nested past the stack
        (b'{"host_id": "x", "targets": []}', "sent an invalid check-in: field"),
        (b'{"targets": "all of them"}', "sent an invalid check-in"),
    ],
)
def test_server_answering_garbage(patched_agent, fake_server, body, message) -> None:
    agent, target = patched_agent
    fake_server.checkin = lambda _request: (200, body)
    point_at(agent, fake_server.url)
    before = snapshot(agent)
    assert message in run_failing(agent, "--auto-update")
    assert_nothing_changed(agent, target, before)


def test_a_refusal_with_a_body_nested_past_the_stack_is_one_line(
    patched_agent, fake_server
) -> None:
    agent, target = patched_agent
    fake_server.checkin = lambda _request: (403, b"[" * 100_000 + b"]" * 100_000)
    point_at(agent, fake_server.url)
    before = snapshot(agent)
    assert "refused the request (403)" in run_failing(agent, "--auto-update")
    assert_nothing_changed(agent, target, before)


def test_tampered_bundle_is_refused_before_anything_is_applied(
    patched_agent, fake_server, bundles, fixture_build
) -> None:
    agent, target = patched_agent
    data = bytearray(bundles[2].read_bytes())
    data[len(data) // 2] ^= 0x01
    fake_server.offer(bytes(data), nsfix_build_id(fixture_build), 2)
    point_at(agent, fake_server.url)
    before = snapshot(agent)
    error = run_failing(agent, "--auto-update")
    assert "does not verify" in error and "nothing was applied" in error
    assert_nothing_changed(agent, target, before)


def test_bundle_other_than_announced_is_refused(
    patched_agent, fake_server, bundles, fixture_build
) -> None:
    agent, target = patched_agent
    genuine = bundles[2].read_bytes()
    fake_server.offer(genuine, nsfix_build_id(fixture_build), 2, sha256="ef" * 32)
    point_at(agent, fake_server.url)
    before = snapshot(agent)
    error = run_failing(agent, "--auto-update")
    assert "not the announced file" in error
    assert_nothing_changed(agent, target, before)


def test_refusal_is_not_retried_and_names_the_cause(patched_agent, fake_server) -> None:
    agent, target = patched_agent
    fake_server.checkin = lambda _request: (401, b'{"detail": "invalid host token"}')
    point_at(agent, fake_server.url)
    before = snapshot(agent)
    error = run_failing(agent, "--check")
    assert "refused the request (401: invalid host token)" in error and "--register" in error
    assert fake_server.requests.count(f"/api/v1/hosts/{HOST_ID}/checkin") == 1
    assert_nothing_changed(agent, target, before)


def test_transient_failures_are_retried_with_backoff(fake_server) -> None:
    answers = iter([(503, b""), (502, b""), (200, b"{}")])
    fake_server.checkin = lambda _request: next(answers)
    slept: list[float] = []
    notes: list[str] = []
    client = ServerClient(
        fake_server.url, token="t", attempts=3, backoff_base=0.5, sleep=slept.append,
        notify=notes.append,
    )  # fmt: skip
    with client, pytest.raises(ServerError, match="invalid check-in"):
        client.check_in(HOST_ID, {})
    assert len(fake_server.requests) == 3 and len(slept) == 2
    assert 0 <= slept[0] <= 0.5 and 0 <= slept[1] <= 1.0
    assert "answered 503; retrying" in notes[0]


def test_backoff_is_exponential_with_full_jitter() -> None:
    assert backoff_delay(0, 1.0, lambda: 0.999) < 1.0
    assert 7.9 < backoff_delay(3, 1.0, lambda: 0.999) < 8.0
    assert backoff_delay(20, 1.0, lambda: 0.999) < 60.0  # capped
    assert backoff_delay(5, 1.0, lambda: 0.0) == 0.0


def test_retries_keep_the_same_checkin_id(fake_server) -> None:
    seen: list[str] = []

    def flaky(body: dict[str, Any]) -> tuple[int, bytes]:
        seen.append(body["checkin_id"])
        return 503, b""

    fake_server.checkin = flaky
    client = ServerClient(fake_server.url, attempts=3, sleep=lambda _s: None)
    with client, pytest.raises(ServerError, match="answered 503"):
        client.check_in(HOST_ID, {})
    assert len(seen) == 3 and len(set(seen)) == 1
