"""Feed downloads against a real HTTP server on loopback: conditional requests, bounds, failures."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from nonstop.cve.errors import FeedError
from nonstop.cve.feeds import parse_feed
from nonstop.cve.sync import download

TRACKER = (Path(__file__).parent.parent / "fixtures" / "cve" / "tracker.json").read_bytes()
LAST_MODIFIED = "Sat, 06 Dec 2025 02:00:00 GMT"
ETAG = '"tracker-v1"'


class Feeds(BaseHTTPRequestHandler):
    """The tracker's JSON at /json (Last-Modified, ETag, 304), and misbehaving paths."""

    requests: ClassVar[list[dict[str, str]]] = []

    def log_message(self, format: str, *args: object) -> None:  # tests stay quiet
        pass

    def do_GET(self) -> None:
        Feeds.requests.append({"path": self.path, **self.headers})
        route = {
            "/json": self.tracker,
            "/only-date": self.tracker,
            "/moved": lambda: self.redirect("/json"),
            "/loop": lambda: self.redirect("/loop"),
            "/big": self.big,
            "/bomb": self.bomb,
            "/drip": self.drip,
            "/slow": self.slow,
        }.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        route()

    def tracker(self) -> None:
        validators = {"Last-Modified": LAST_MODIFIED}
        if self.path == "/json":
            validators["ETag"] = ETAG
        etag = validators.get("ETag")
        unchanged = (etag is not None and self.headers.get("If-None-Match") == etag) or (
            self.headers.get("If-Modified-Since") == LAST_MODIFIED
        )
        self.send_response(304 if unchanged else 200)
        for name, value in validators.items():
            self.send_header(name, value)
        if unchanged:
            self.end_headers()
            return
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(TRACKER)))
        self.end_headers()
        self.wfile.write(TRACKER)

    def redirect(self, where: str) -> None:
        self.send_response(302)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def big(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10_000))
        self.end_headers()
        self.wfile.write(b" " * 10_000)

    def bomb(self) -> None:
        """50 kB of gzip that becomes 50 MB: the bound counts what it becomes."""
        body = gzip.compress(b" " * 50_000_000)
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def drip(self) -> None:
        self.send_response(200)
        self.end_headers()
        for _ in range(40):  # 4 s at most, then the server closes
            self.wfile.write(b" ")
            self.wfile.flush()
            time.sleep(0.1)

    def slow(self) -> None:
        time.sleep(1.5)
        self.tracker()


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """The client hung up on /big, /bomb or /drip, as it should: nothing to print."""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = QuietServer(("127.0.0.1", 0), Feeds)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_feed_then_not_modified(server: str) -> None:
    first = download(f"{server}/json")
    assert first.body == TRACKER
    assert (first.last_modified, first.etag, first.modified) == (LAST_MODIFIED, ETAG, True)
    assert parse_feed(first.body, "json").feed == "debian-tracker"

    Feeds.requests.clear()
    again = download(f"{server}/json", last_modified=first.last_modified, etag=first.etag)
    assert (again.body, again.modified) == (None, False)
    assert (again.last_modified, again.etag) == (LAST_MODIFIED, ETAG)
    (asked,) = Feeds.requests
    assert (asked["If-Modified-Since"], asked["If-None-Match"]) == (LAST_MODIFIED, ETAG)


def test_the_tracker_sends_only_a_date(server: str) -> None:
    first = download(f"{server}/only-date")
    assert (first.last_modified, first.etag) == (LAST_MODIFIED, None)
    Feeds.requests.clear()
    again = download(f"{server}/only-date", last_modified=first.last_modified)
    assert not again.modified
    assert "If-None-Match" not in Feeds.requests[0]
    assert download(f"{server}/only-date", last_modified="Mon, 01 Jan 2024 00:00:00 GMT").modified


def test_redirects_are_followed(server: str) -> None:
    assert download(f"{server}/moved").body == TRACKER


@pytest.mark.parametrize(
    ("path", "kwargs", "problem"),
    [
        ("/missing", {}, "HTTP 404 Not Found"),
        ("/loop", {}, "more than 5 redirects"),
        ("/big", {"limit": 1000}, "larger than 1000 bytes (10000)"),
        ("/bomb", {"limit": 1_000_000}, "larger than 1000000 bytes"),
        ("/drip", {"deadline": 0.5}, "not downloaded within 0.5 s (slow server?)"),
        ("/slow", {"timeout": 0.3}, "no answer within 0.3 s"),
    ],
)
def test_failures_are_one_line(
    server: str, path: str, kwargs: dict[str, float], problem: str
) -> None:
    with pytest.raises(FeedError) as refused:
        download(f"{server}{path}", **kwargs)  # type: ignore[arg-type]
    assert str(refused.value) == f"sync: {server}{path}: {problem}"


def test_a_closed_port_and_credentials_left_out(server: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FeedError) as refused:
        download(f"http://user:secret@127.0.0.1:{port}/json?token=secret")
    message = str(refused.value)
    assert message.startswith(f"sync: http://127.0.0.1:{port}/json: cannot download: ")
    assert "Connection refused" in message
    assert "secret" not in message
    assert "\n" not in message


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/json", "json"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(FeedError) as refused:
        download(url)
    assert str(refused.value) == f"sync: {url!r} is not an http or https URL"
