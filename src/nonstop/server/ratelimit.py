"""Rate limits: registrations per client address, failed authentications per address and
per credential presented (``api.deps``).

Fixed one-minute windows, counted in memory per server process (so N workers
or replicas admit up to N times the limit; a load balancer can add a global
one). The table is bounded: when full, the oldest windows are dropped first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

WINDOW_SECONDS = 60.0


class WindowLimiter:
    """Events per client key in fixed one-minute windows, thread-safe; ``per_minute``
    0 disables it (everything is allowed).
    """

    def __init__(self, per_minute: int, max_clients: int = 65536) -> None:
        self.per_minute = per_minute
        self._max_clients = max_clients
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def _current(self, client: str, now: float) -> tuple[float, int]:
        start, count = self._windows.get(client, (now, 0))
        return (now, 0) if now - start >= WINDOW_SECONDS else (start, count)

    def exhausted(self, client: str) -> bool:
        """True when CLIENT used up this window's allowance (nothing is counted)."""
        if not self.enabled:
            return False
        with self._lock:
            return self._current(client, time.monotonic())[1] >= self.per_minute

    def hit(self, client: str) -> bool:
        """Count one event for CLIENT; False when it is over the limit."""
        if not self.enabled:
            return True
        now = time.monotonic()
        with self._lock:
            start, count = self._current(client, now)
            self._windows[client] = (start, count + 1)
            self._windows.move_to_end(client)
            while len(self._windows) > self._max_clients:
                self._windows.popitem(last=False)
            return count < self.per_minute

    def retry_after(self, client: str) -> int:
        """Whole seconds until CLIENT's window ends, at least 1: the Retry-After value."""
        with self._lock:
            start, _ = self._windows.get(client, (time.monotonic(), 0))
        return max(1, int(WINDOW_SECONDS - (time.monotonic() - start)) + 1)
