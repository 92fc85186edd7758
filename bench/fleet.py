"""Fleet simulator: N hosts register and check in against one real `nonstop serve`.

For each database backend (SQLite, a private PostgreSQL cluster with durable
default settings) and each server worker count, it starts a fresh server on
loopback, uploads a few signed bundles, registers N simulated hosts, then has
every host check in once with a realistic inventory (kernel + L libraries
drawn from a shared pool, as in a fleet running one distro). Clients are
asyncio + httpx, optionally spread over several processes. Prints
check-ins/s and p50/p99 latency per configuration, then one JSON line each.

    .venv/bin/python bench/fleet.py --hosts 100000 --backend postgresql --workers 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import SAMPLE_OBJECT, sample_manifest
from tests.server.conftest import create_admin_token
from tests.server.pgcluster import PostgresCluster
from tests.server.serverproc import ServerProcess

from nonstop.bundle import UserspaceTarget, generate_keypair, load_signing_key, pack

LIBRARY_POOL = 64
PATCHED_LIBRARIES = 8


@dataclass
class Result:
    backend: str
    workers: int
    hosts: int
    registrations_per_s: float
    checkins: int
    checkins_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU time per check-in: what the figures would be on an otherwise idle machine.
    server_cpu_ms: float
    database_cpu_ms: float
    client_cpu_ms: float


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time of process ROOT and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, frontier = 0.0, [root]
    while frontier:
        pid = frontier.pop()
        total += times.get(pid, 0.0)
        frontier.extend(child for child, parent in parents.items() if parent == pid)
    return total


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def library_pool() -> list[dict[str, Any]]:
    rng = random.Random(7)
    return [
        {
            "build_id": f"{rng.getrandbits(160):040x}",
            "soname": f"libsim{i}.so.1",
            "package": {"name": f"libsim{i}", "version": "1.0-1"},
        }
        for i in range(LIBRARY_POOL)
    ]


def checkin_body(hostname: str, libraries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "checkin_id": str(uuid.uuid4()),
        "agent_version": "0.1.0",
        "hostname": hostname,
        "os": {"id": "debian", "version_id": "12"},
        "kernel": {"release": "6.1.0-28-amd64", "build_id": "ab" * 20, "version_digest": "cd" * 32},
        "libraries": [dict(lib, processes=3) for lib in libraries],
    }


async def register_hosts(url: str, key: str, count: int, concurrency: int) -> list[tuple[str, str]]:
    hosts: list[tuple[str, str]] = []
    queue = iter(range(count))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for number in queue:
                response = await client.post(
                    "/api/v1/hosts/register",
                    json={"registration_key": key, "hostname": f"sim-{number}"},
                )
                response.raise_for_status()
                body = response.json()
                hosts.append((body["host_id"], body["token"]))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return hosts


async def checkin_hosts(
    url: str, hosts: list[tuple[str, str]], concurrency: int, libraries: int, seed: int
) -> tuple[list[float], int, float, float]:
    """Latencies (s), errors, wall-clock start and end of this share of the fleet."""
    pool = library_pool()
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    queue = iter(hosts)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal errors
            for host_id, token in queue:
                body = checkin_body(host_id[:12], rng.sample(pool, libraries))
                started = time.perf_counter()
                try:
                    response = await client.post(
                        f"/api/v1/hosts/{host_id}/checkin",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.TransportError as exc:
                    errors += 1
                    print(f"check-in failed: {exc!r}", file=sys.stderr)
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors += 1

        start = time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        end = time.time()
    return latencies, errors, start, end


def checkin_share(
    args: tuple[str, list[tuple[str, str]], int, int, int],
) -> tuple[list[float], int, float, float, float]:
    """One client process's share; also returns the CPU time the client itself used."""
    started = time.process_time()
    latencies, errors, start, end = asyncio.run(checkin_hosts(*args))
    return latencies, errors, start, end, time.process_time() - started


def upload_bundles(url: str, token: str, key_dir: Path) -> None:
    signing = load_signing_key(key_dir / "signing.key")
    files = {"patch.o": SAMPLE_OBJECT}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        for lib in library_pool()[:PATCHED_LIBRARIES]:
            target = UserspaceTarget(build_id=lib["build_id"], soname=lib["soname"])
            data = pack(sample_manifest(files, target=target, level=1), files, signing)
            client.post("/api/v1/admin/bundles", content=data).raise_for_status()
        client.patch("/api/v1/admin/feeds/stable", json={"delay_hours": 0}).raise_for_status()


def run_one(
    backend: str,
    workers: int,
    database_url: str,
    options: argparse.Namespace,
    key_dir: Path,
    database_pid: int | None,
) -> Result:
    data_dir = Path(tempfile.mkdtemp(prefix="nonstop-fleet-"))
    trusted = data_dir / "vendor-keys"
    trusted.mkdir()
    (trusted / "vendor.pub").write_bytes((key_dir / "signing.pub").read_bytes())
    server = ServerProcess(
        data_dir,
        database_url,
        "--workers",
        str(workers),
        "--no-access-log",
        "--registrations-per-minute",
        "0",
        "--failed-auth-per-minute",
        "0",
        "--blob-store",
        "database" if backend == "postgresql" else "directory",
        "--db-pool-size",
        str(options.pool_size),
    ).start()
    try:
        token = create_admin_token(data_dir, database_url)
        upload_bundles(server.url, token, key_dir)
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}
        ) as admin:
            key = admin.post("/api/v1/admin/keys", json={"name": "fleet"}).json()["key"]
        started = time.perf_counter()
        hosts = asyncio.run(register_hosts(server.url, key, options.hosts, options.concurrency))
        registrations_per_s = len(hosts) / (time.perf_counter() - started)
        shares = [hosts[i :: options.client_processes] for i in range(options.client_processes)]
        per_process = max(1, options.concurrency // options.client_processes)
        jobs = [
            (server.url, share, per_process, options.libraries, i) for i, share in enumerate(shares)
        ]
        assert server.process is not None
        server_cpu = tree_cpu_seconds(server.process.pid)
        database_cpu = tree_cpu_seconds(database_pid) if database_pid else 0.0
        with ProcessPoolExecutor(options.client_processes) as pool:
            results = list(pool.map(checkin_share, jobs))
        server_cpu = tree_cpu_seconds(server.process.pid) - server_cpu
        database_cpu = (tree_cpu_seconds(database_pid) - database_cpu) if database_pid else 0.0
        client_cpu = sum(result[4] for result in results)
        latencies = sorted(value for result in results for value in result[0])
        errors = sum(result[1] for result in results)
        elapsed = max(result[3] for result in results) - min(result[2] for result in results)
        return Result(
            backend=backend,
            workers=workers,
            hosts=len(hosts),
            registrations_per_s=round(registrations_per_s, 1),
            checkins=len(latencies),
            checkins_per_s=round(len(latencies) / elapsed, 1),
            p50_ms=round(percentile(latencies, 0.50) * 1000, 2),
            p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
            errors=errors,
            server_cpu_ms=round(server_cpu * 1000 / max(1, len(latencies)), 3),
            database_cpu_ms=round(database_cpu * 1000 / max(1, len(latencies)), 3),
            client_cpu_ms=round(client_cpu * 1000 / max(1, len(latencies)), 3),
        )
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument(
        "--backend", choices=["sqlite", "postgresql"], nargs="+", default=["sqlite", "postgresql"]
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--libraries", type=int, default=20, help="libraries per host inventory")
    parser.add_argument("--pool-size", type=int, default=10, help="database connections per worker")
    options = parser.parse_args()

    key_dir = Path(tempfile.mkdtemp(prefix="nonstop-fleet-key-"))
    generate_keypair(key_dir / "vendor")
    key_dir = key_dir / "vendor"
    cluster = PostgresCluster().start() if "postgresql" in options.backend else None
    results: list[Result] = []
    try:
        for number, (backend, workers) in enumerate(
            (b, w) for b in options.backend for w in options.workers
        ):
            if backend == "postgresql":
                assert cluster is not None
                url = cluster.create_database(f"fleet_{number}")
            else:
                url = f"sqlite:///{tempfile.mkdtemp(prefix='nonstop-fleet-db-')}/fleet.db"
            database_pid = cluster.pid if backend == "postgresql" and cluster else None
            result = run_one(backend, workers, url, options, key_dir, database_pid)
            results.append(result)
            print(
                f"{backend:10} workers={workers}  hosts={result.hosts}  "
                f"register {result.registrations_per_s:8.1f}/s  "
                f"check-ins {result.checkins_per_s:8.1f}/s  "
                f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                f"errors {result.errors}  "
                f"CPU ms/check-in: server {result.server_cpu_ms} db {result.database_cpu_ms} "
                f"client {result.client_cpu_ms}",
                flush=True,
            )
    finally:
        if cluster is not None:
            cluster.stop()
    for result in results:
        print(json.dumps(result.__dict__))
    return 0 if all(result.errors == 0 for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
