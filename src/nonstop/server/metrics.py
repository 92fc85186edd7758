"""Prometheus metrics: check-ins, registrations, downloads, responses, latency, hosts by state,
vulnerability findings.

Counters and histograms live in this process; with several uvicorn workers
``nonstop serve`` sets PROMETHEUS_MULTIPROC_DIR so a scrape of any worker
sums them all. Hosts by state is read from the database at scrape time
(cached briefly), so every replica reports the same fleet-wide figure.
Findings come from the process's last fleet recompute (``vulnerabilities``):
a scrape never starts one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from nonstop.cve.fleet import Fleet
from nonstop.cve.model import Status
from nonstop.server.db import Database
from nonstop.server.models import hosts, utcnow

CHECKINS = Counter("nonstop_checkins", "Check-ins answered", ["result"])
REGISTRATIONS = Counter("nonstop_registrations", "Host registration attempts", ["result"])
DOWNLOADS = Counter("nonstop_bundle_downloads", "Bundle downloads by hosts", ["result"])
AUTH_FAILURES = Counter("nonstop_auth_failures", "Refused credentials", ["kind"])
RESPONSES = Counter("nonstop_http_responses", "HTTP responses", ["route", "status"])
LATENCY = Histogram(
    "nonstop_http_request_duration_seconds",
    "Time to answer a request",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
HOST_STATES = ("active", "stale", "never", "unregistered")


class HostStateCollector(Collector):
    """``nonstop_hosts{state}`` from the hosts table, re-read at most every CACHE_SECONDS."""

    CACHE_SECONDS = 10.0

    def __init__(self, db: Database, stale_after_days: int) -> None:
        self._db = db
        self._stale = timedelta(days=stale_after_days)
        self._cached: tuple[float, dict[str, int]] | None = None
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        """Hosts per state, every state in ``HOST_STATES`` present (0 if none), read at most
        CACHE_SECONDS ago.
        """
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.CACHE_SECONDS:
                return self._cached[1]
        threshold = utcnow() - self._stale
        state = case(
            (hosts.c.unregistered_at.is_not(None), "unregistered"),
            (hosts.c.last_checkin_at.is_(None), "never"),
            (hosts.c.last_checkin_at < threshold, "stale"),
            else_="active",
        ).label("state")
        with self._db.read() as connection:
            rows = connection.execute(select(state, func.count()).group_by(state)).all()
        counts = dict.fromkeys(HOST_STATES, 0) | {row[0]: row[1] for row in rows}
        with self._lock:
            self._cached = (time.monotonic(), counts)
        return counts

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("nonstop_hosts", "Registered hosts by state", labels=["state"])
        for name, value in self.counts().items():
            gauge.add_metric([name], value)
        yield gauge


class FindingsCollector(Collector):
    """``nonstop_cve_findings{status,urgency}`` (host and CVE pairs) and
    ``nonstop_cve_hosts{status}`` (hosts with at least one finding of that status), from the
    fleet FLEET returns (None: not computed yet, nothing reported)."""

    def __init__(self, fleet: Callable[[], Fleet | None]) -> None:
        self._fleet = fleet

    def collect(self) -> Iterator[Metric]:
        fleet = self._fleet()
        if fleet is None:
            return
        findings = GaugeMetricFamily(
            "nonstop_cve_findings", "Host and CVE findings by status", labels=["status", "urgency"]
        )
        for (status, urgency), number in sorted(fleet.totals.items(), key=str):
            findings.add_metric([status.value, urgency or "none"], number)
        yield findings
        hosts_per_status = GaugeMetricFamily(
            "nonstop_cve_hosts", "Hosts with at least one finding of a status", labels=["status"]
        )
        having: dict[Status, int] = dict.fromkeys(Status, 0)
        for assessment in fleet.assessments():
            for status in {status for status, _ in assessment.counts}:
                having[status] += 1
        for status, number in having.items():
            hosts_per_status.add_metric([status.value], number)
        yield hosts_per_status


def render(host_states: HostStateCollector, findings: FindingsCollector) -> bytes:
    """The text exposition of every metric, across worker processes when there are several."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for metric in (CHECKINS, REGISTRATIONS, DOWNLOADS, AUTH_FAILURES, RESPONSES, LATENCY):
            registry.register(metric)
    registry.register(host_states)
    registry.register(findings)
    return generate_latest(registry)
