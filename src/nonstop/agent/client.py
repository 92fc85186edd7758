"""HTTP client of the patch server's API v1 (docs/api.md), for one host.

Every request has a timeout for connecting and for each read, and an overall
deadline, so a server that accepts and then stalls (or trickles bytes) is
given up on. Transient failures (cannot connect, timeout, 5xx, 429) are
retried with exponential backoff and full jitter; a refusal (4xx) is not.
Answers are size-capped and checked field by field (``api_models``) before
anything uses them. Every failure is a :class:`ServerError` with one line
naming the server and the cause; the host token never appears in a message.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from nonstop.agent.actions import EXIT_SERVER, AgentError
from nonstop.agent.api_models import CheckinAnswer, HostFindings, MalformedAnswer, Registration

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
MAX_JSON_BYTES = 16 << 20
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
BACKOFF_CAP_SECONDS = 60.0


STALE_REGISTRATION = (
    "the server no longer knows this host (unregistered or deleted there): "
    "run nonstopctl --unregister, then nonstopctl --register KEY"
)


class ServerError(AgentError):
    """The patch server could not be reached, refused, or answered garbage (one line)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, EXIT_SERVER)
        self.status = status


class _Transient(Exception):
    """One try failed in a way worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def backoff_delay(attempt: int, base: float, rng: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)) (attempt counts from 0)."""
    return rng() * min(BACKOFF_CAP_SECONDS, base * 2.0**attempt)


class ServerClient:
    """A connection to one patch server, authenticated as a host when TOKEN is given.

    Every API call raises ServerError (EXIT_SERVER) for any failure; close it (or use ``with``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        attempts: int = 4,
        backoff_base: float = 1.0,
        notify: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx  # only commands that talk to the server pay for it

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.notify = notify or (lambda _line: None)
        self.sleep = sleep
        headers = {"User-Agent": "nonstopctl"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout)
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- API v1 -----------------------------------------------------------------

    def register(self, key: str, hostname: str) -> Registration:
        """Register as a new host with KEY; the host id and token the server issued.

        Retried only when the server cannot have registered it: no connection was made,
        or it answered 429 or 503.
        """
        # Not idempotent: a second try after an answer was lost would register twice,
        # so only failures before the request reached the server (or a 429/503, which
        # registered nothing) are retried.
        body = {"registration_key": key, "hostname": hostname}
        data = self._call("POST", "/api/v1/hosts/register", body=body, expect=201, safe=False)
        return self._parse(Registration.parse, data, "registration")

    def check_in(self, host_id: str, inventory: dict[str, Any]) -> CheckinAnswer:
        """Send INVENTORY (``collect``'s body) and read the decisions (retried when transient)."""
        # Idempotent by its check-in id: every retry sends the same one.
        body = {"checkin_id": str(uuid.uuid4()), **inventory}
        data = self._call("POST", f"/api/v1/hosts/{host_id}/checkin", body=body, expect=200)
        return self._parse(CheckinAnswer.parse, data, "check-in")

    def findings(self, host_id: str) -> HostFindings:
        """The host's vulnerability findings (GET /api/v1/hosts/{id}/vulnerabilities)."""
        data = self._call("GET", f"/api/v1/hosts/{host_id}/vulnerabilities", expect=200)
        return self._parse(HostFindings.parse, data, "findings document")

    def download(self, url: str, max_bytes: int) -> bytes:
        """The raw bytes at URL (a bundle path from a check-in), at most MAX_BYTES."""
        return self._call("GET", url, expect=200, max_bytes=max_bytes)

    def health(self) -> None:
        """ServerError unless the server answers its health check."""
        self._call("GET", "/healthz", expect=200)

    def unregister(self, host_id: str) -> None:
        """Ask the server to forget host HOST_ID; ServerError (with its status) if it refuses."""
        self._call("DELETE", f"/api/v1/hosts/{host_id}", expect=204)

    # -- plumbing ---------------------------------------------------------------

    def _parse(self, parse: Callable[[Any], T], data: bytes, what: str) -> T:
        where = f"the patch server at {self.base_url}"
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the stack
            raise ServerError(f"{where} answered malformed JSON") from None
        try:
            return parse(document)
        except MalformedAnswer as exc:
            where = f"the patch server at {self.base_url}"
            raise ServerError(f"{where} sent an invalid {what}: {exc}") from None

    def _call(
        self,
        method: str,
        path: str,
        *,
        expect: int,
        body: Any = None,
        safe: bool = True,
        max_bytes: int = MAX_JSON_BYTES,
    ) -> bytes:
        """The answer's body, retrying transient failures; ServerError when it cannot."""
        last, delay = "", 0.0
        for attempt in range(self.attempts):
            if attempt:
                self.sleep(delay)
            try:
                return self._once(method, path, expect, body, max_bytes, safe)
            except _Transient as exc:
                last = str(exc)
                if exc.retry_after is not None:
                    delay = exc.retry_after
                else:
                    delay = backoff_delay(attempt, self.backoff_base)
                if attempt + 1 < self.attempts:
                    self.notify(
                        f"{last}; retrying in {delay:.1f} s (try {attempt + 2} of {self.attempts})"
                    )
        tries = f" (after {self.attempts} tries)" if self.attempts > 1 else ""
        raise ServerError(f"{last}{tries}")

    def _once(
        self, method: str, path: str, expect: int, body: Any, max_bytes: int, safe: bool
    ) -> bytes:
        import httpx

        where = f"the patch server at {self.base_url}"
        deadline = time.monotonic() + 4 * self.timeout
        try:
            with self._http.stream(method, path, json=body) as response:
                status = response.status_code
                if status in TRANSIENT_STATUS and (safe or status in (429, 503)):
                    raise _Transient(f"{where} answered {status}", _retry_after(response))
                chunks = bytearray()
                for chunk in response.iter_bytes():
                    chunks += chunk
                    if len(chunks) > max_bytes:
                        raise ServerError(f"{where} sent more than {max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise _Transient(f"{where} is too slow (over {4 * self.timeout:g} s)")
        except httpx.ConnectError as exc:
            raise _Transient(f"cannot reach {where}: {_reason(exc)}") from None
        except httpx.TimeoutException:
            if not safe and method == "POST":
                raise ServerError(f"{where} did not answer within {self.timeout:g} s") from None
            raise _Transient(f"{where} did not answer within {self.timeout:g} s") from None
        except httpx.TransportError as exc:
            if not safe:
                raise ServerError(f"{where} broke the connection: {_reason(exc)}") from None
            raise _Transient(f"{where} broke the connection: {_reason(exc)}") from None
        if status != expect:
            has_token = "authorization" in self._http.headers
            raise ServerError(_refusal(where, status, bytes(chunks), has_token), status=status)
        return bytes(chunks)


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(BACKOFF_CAP_SECONDS, max(0.0, float(value)))
    except ValueError:
        return None


def _refusal(where: str, status: int, body: bytes, has_token: bool) -> str:
    """One line for a 4xx answer: the server's own detail when it sent one."""
    detail = ""
    try:
        document = json.loads(body)
        if isinstance(document, dict) and isinstance(document.get("detail"), str):
            detail = document["detail"][:200]
    except (ValueError, RecursionError):
        pass
    hint = ""
    if status == 401 and has_token:
        hint = f"; {STALE_REGISTRATION}"
    return f"{where} refused the request ({status}{': ' + detail if detail else ''}){hint}"
