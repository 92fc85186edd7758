"""Downloading a feed for ``nonstop cve sync``: conditional, bounded in size and time.

``download(url, last_modified=..., etag=...)`` asks with ``If-Modified-Since``
and ``If-None-Match`` from the previous answer's ``Last-Modified`` and
``ETag`` (the tracker sends ``Last-Modified``, static hosts both), so an
unchanged feed costs one small request. The body is read as a stream and cut
at a size bound (counted after ``Content-Encoding`` is undone, so a small
compressed answer cannot grow past it) and a deadline for the whole download,
on top of httpx's per-operation timeout. Every network or HTTP failure is a
FeedError of one line naming the URL without its credentials or query.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from nonstop.cve.errors import FeedError, shown
from nonstop.cve.feeds import MAX_FEED_BYTES

LABEL = "sync"
TIMEOUT = 60.0
"""Seconds for each network operation: connecting, and each read."""
DEADLINE = 900.0
"""Seconds for the whole download: 100 MB at 1 Mbit/s takes about 800 s."""
MAX_REDIRECTS = 5
_MAX_VALIDATOR = 256  # Last-Modified and ETag values sent back: longer is not one


@dataclass(frozen=True)
class Download:
    """A feed's answer: its body, or None when it has not changed; and the validators to
    send next time (the new ones, else those sent)."""

    body: bytes | None
    last_modified: str | None
    etag: str | None

    @property
    def modified(self) -> bool:
        return self.body is not None


def download(
    url: str,
    *,
    last_modified: str | None = None,
    etag: str | None = None,
    limit: int = MAX_FEED_BYTES,
    timeout: float = TIMEOUT,
    deadline: float = DEADLINE,
) -> Download:
    """URL's body, or "not modified" since LAST_MODIFIED / ETAG (module docstring)."""
    where = shown_url(url)
    headers = {}
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    if etag:
        headers["If-None-Match"] = etag
    started = time.monotonic()
    try:
        with (
            httpx.Client(
                timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS
            ) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code == httpx.codes.NOT_MODIFIED:
                return Download(
                    None,
                    _validator(response, "Last-Modified") or last_modified,
                    _validator(response, "ETag") or etag,
                )
            if response.status_code != httpx.codes.OK:
                raise FeedError(
                    f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                    feed=LABEL,
                    where=where,
                )
            body = _body(response, limit, started, deadline, where)
            return Download(
                body, _validator(response, "Last-Modified"), _validator(response, "ETag")
            )
    except httpx.TimeoutException:
        raise FeedError(f"no answer within {timeout:g} s", feed=LABEL, where=where) from None
    except httpx.TooManyRedirects:
        raise FeedError(f"more than {MAX_REDIRECTS} redirects", feed=LABEL, where=where) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise FeedError(f"cannot download: {detail}", feed=LABEL, where=where) from None


def _body(
    response: httpx.Response, limit: int, started: float, deadline: float, where: str
) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FeedError(f"larger than {limit} bytes ({declared})", feed=LABEL, where=where)
    chunks = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise FeedError(f"larger than {limit} bytes", feed=LABEL, where=where)
        if time.monotonic() - started > deadline:
            raise FeedError(
                f"not downloaded within {deadline:g} s (slow server?)", feed=LABEL, where=where
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _validator(response: httpx.Response, name: str) -> str | None:
    """Header NAME of RESPONSE if it can be sent back as it is."""
    value: str | None = response.headers.get(name)
    if value and len(value) <= _MAX_VALIDATOR and value.isascii() and value.isprintable():
        return value
    return None


def shown_url(url: str) -> str:
    """URL as errors show it: no user, password or query (they may hold credentials)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return shown(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FeedError(f"{shown(url)} is not an http or https URL", feed=LABEL)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"
