"""Fleet simulator: N hosts register and check in against one real `nonstop serve`.

For each database backend (SQLite, a private PostgreSQL cluster with durable
default settings) and each server worker count, it starts a fresh server on
loopback, uploads a few signed bundles, registers N simulated hosts, then has
every host check in once with a realistic inventory (kernel + L libraries
drawn from a shared pool, as in a fleet running one distro). Clients are
asyncio + httpx, or the lean asyncio client of ``leanhttp`` (httpx alone
uses more CPU per request than the server); with both, the fleet is split
between them and each half is measured on its own, with the CPU the server,
PostgreSQL and the client spent on it. Each simulated host connects for its
own request, as an agent does (``--shared-connections``: a few keep-alive
connections carry them all). Each client's floor (its CPU per request against
a server that does nothing) is measured first. Prints
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

from bench.leanhttp import FixedAnswerServer, LeanConnection, request_bytes
from tests.conftest import SAMPLE_OBJECT, sample_manifest
from tests.server.conftest import create_admin_token
from tests.server.pgcluster import PostgresCluster, free_port
from tests.server.serverproc import ServerProcess

from nonstop.bundle import UserspaceTarget, generate_keypair, load_signing_key, pack

LIBRARY_POOL = 64
PATCHED_LIBRARIES = 8


@dataclass
class Result:
    backend: str
    workers: int
    client: str
    hosts: int
    registrations_per_s: float
    registration_server_cpu_ms: float
    checkins: int
    checkins_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU time per check-in: what the figures would be on an otherwise idle machine.
    server_cpu_ms: float
    database_cpu_ms: float
    client_cpu_ms: float
    # The client's CPU per request against a server that does nothing (FixedAnswerServer).
    client_floor_ms: float
    # Seconds for the admin's per-target levels report over the whole fleet, and for one target.
    levels_report_s: float
    target_report_s: float


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


def sample_answer(libraries: int) -> bytes:
    """A check-in answer of the usual size, for weighing clients against FixedAnswerServer."""
    decision = {
        "target": "userspace:" + "ab" * 20,
        "kind": "userspace",
        "name": "libsim0.so.1",
        "applied_level": None,
        "action": "none",
        "reason": "no bundle for this target",
        "bundle": None,
    }
    answer = {
        "host_id": "0" * 32,
        "checkin_id": str(uuid.uuid4()),
        "recorded": True,
        "feed": "stable",
        "server_time": "2026-01-01T00:00:00Z",
        "next_checkin_seconds": 3600,
        "targets": [decision] * (libraries + 1),
    }
    return json.dumps(answer).encode()


def checkin_body(hostname: str, libraries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "checkin_id": str(uuid.uuid4()),
        "agent_version": "0.1.0",
        "hostname": hostname,
        "os": {"id": "debian", "version_id": "12"},
        "kernel": {"release": "6.1.0-28-amd64", "build_id": "ab" * 20, "version_digest": "cd" * 32},
        "libraries": [dict(lib, processes=3) for lib in libraries],
    }


@dataclass
class Phase:
    """What one client process measured: latencies (s), errors, wall-clock span, its CPU."""

    latencies: list[float]
    errors: int
    start: float
    end: float
    client_cpu: float
    answers: list[bytes]


# One prepared request: path, Authorization token (or None), body bytes.
Prepared = tuple[str, str | None, bytes]


def registration_requests(key: str, numbers: range) -> list[Prepared]:
    return [
        (
            "/api/v1/hosts/register",
            None,
            json.dumps({"registration_key": key, "hostname": f"sim-{n}"}).encode(),
        )
        for n in numbers
    ]


def checkin_requests(hosts: list[tuple[str, str]], libraries: int, seed: int) -> list[Prepared]:
    pool = library_pool()
    rng = random.Random(seed)
    return [
        (
            f"/api/v1/hosts/{host_id}/checkin",
            token,
            json.dumps(checkin_body(host_id[:12], rng.sample(pool, libraries))).encode(),
        )
        for host_id, token in hosts
    ]


async def drive_httpx(
    url: str, requests: list[Prepared], concurrency: int, keep_answers: bool, per_host: bool
) -> Phase:
    """httpx as lean as it goes: one client, bodies and headers built beforehand.

    PER_HOST: every request on a new connection (``Connection: close``), else keep-alive.
    """
    headers = [
        {"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {})
        | ({"Connection": "close"} if per_host else {})
        for _, token, _ in requests
    ]
    latencies: list[float] = []
    answers: list[bytes] = []
    errors = 0
    queue = iter(zip(requests, headers, strict=True))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal errors
            for (path, _, body), header in queue:
                started = time.perf_counter()
                try:
                    response = await client.post(path, content=body, headers=header)
                except httpx.TransportError as exc:
                    errors += 1
                    print(f"request failed: {exc!r}", file=sys.stderr)
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code not in (200, 201):
                    errors += 1
                elif keep_answers:
                    answers.append(response.content)

        cpu, start = time.process_time(), time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        end, cpu = time.time(), time.process_time() - cpu
    return Phase(latencies, errors, start, end, cpu, answers)


async def drive_lean(
    url: str, requests: list[Prepared], concurrency: int, keep_answers: bool, per_host: bool
) -> Phase:
    """The lean client, requests as bytes: PER_HOST, a new connection for every request
    (its latency includes connecting), else one keep-alive connection per request in flight.
    """
    address = httpx.URL(url)
    host, port = address.host, address.port or 80
    raw = [
        request_bytes(
            "POST",
            path,
            f"{host}:{port}",
            body,
            {"Authorization": f"Bearer {token}"} if token else {},
        )
        for path, token, body in requests
    ]
    latencies: list[float] = []
    answers: list[bytes] = []
    errors = 0
    queue = iter(raw)
    shared: list[LeanConnection | None] = [
        None if per_host else await LeanConnection.open(host, port) for _ in range(concurrency)
    ]

    async def worker(kept: LeanConnection | None) -> None:
        nonlocal errors
        for request in queue:
            started = time.perf_counter()
            connection = kept or await LeanConnection.open(host, port)
            status, body = await connection.send(request)
            latencies.append(time.perf_counter() - started)
            if connection is not kept:
                await connection.close()
            if status not in (200, 201):
                errors += 1
            elif keep_answers:
                answers.append(body)

    cpu, start = time.process_time(), time.time()
    await asyncio.gather(*(worker(kept) for kept in shared))
    end, cpu = time.time(), time.process_time() - cpu
    for kept in shared:
        if kept is not None:
            await kept.close()
    return Phase(latencies, errors, start, end, cpu, answers)


DRIVERS = {"httpx": drive_httpx, "lean": drive_lean}


# What a client process sends: registrations (key, host numbers) or check-ins (hosts, seed).
Spec = tuple[str, Any, Any]


def build_requests(spec: Spec, libraries: int) -> list[Prepared]:
    kind, first, second = spec
    if kind == "register":
        return registration_requests(first, second)
    return checkin_requests(first, libraries, second)


def client_share(args: tuple[str, str, Spec, int, int, bool, bool]) -> Phase:
    """Run in its own process, so the CPU it reports is the client's alone.

    Requests are built before the clock starts: the figures weigh sending them.
    """
    client, url, spec, libraries, concurrency, keep_answers, per_host = args
    requests = build_requests(spec, libraries)
    return asyncio.run(DRIVERS[client](url, requests, concurrency, keep_answers, per_host))


def run_clients(
    client: str, url: str, specs: list[Spec], options: argparse.Namespace, keep: bool
) -> list[Phase]:
    """One client process per spec, ``--concurrency`` requests in flight in all."""
    per_process = max(1, options.concurrency // len(specs))
    per_host = not options.shared_connections
    jobs = [(client, url, spec, options.libraries, per_process, keep, per_host) for spec in specs]
    with ProcessPoolExecutor(len(specs)) as pool:
        return list(pool.map(client_share, jobs))


def client_floor(client: str, options: argparse.Namespace) -> float:
    """CPU ms per request of CLIENT sending check-ins to a server that only answers."""
    count = min(options.hosts, 5000)
    hosts = [(f"{n:032x}", f"nsh_{n:032x}_secret") for n in range(count)]
    server = FixedAnswerServer(free_port(), sample_answer(options.libraries))
    try:
        phases = run_clients(client, server.url, [("checkin", hosts, 0)], options, False)
    finally:
        server.stop()
    return phases[0].client_cpu * 1000 / count


def upload_bundles(url: str, token: str, key_dir: Path) -> None:
    signing = load_signing_key(key_dir / "signing.key")
    files = {"patch.o": SAMPLE_OBJECT}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        for lib in library_pool()[:PATCHED_LIBRARIES]:
            target = UserspaceTarget(build_id=lib["build_id"], soname=lib["soname"])
            data = pack(sample_manifest(files, target=target, level=1), files, signing)
            client.post("/api/v1/admin/bundles", content=data).raise_for_status()
        client.patch("/api/v1/admin/feeds/stable", json={"delay_hours": 0}).raise_for_status()


def measure(
    server: ServerProcess,
    database_pid: int | None,
    client: str,
    specs: list[Spec],
    options: argparse.Namespace,
    keep: bool,
) -> tuple[list[Phase], float, float]:
    """Run the client processes; (phases, server CPU s, database CPU s) over the same span."""
    assert server.process is not None
    server_cpu = tree_cpu_seconds(server.process.pid)
    database_cpu = tree_cpu_seconds(database_pid) if database_pid else 0.0
    phases = run_clients(client, server.url, specs, options, keep)
    server_cpu = tree_cpu_seconds(server.process.pid) - server_cpu
    database_cpu = (tree_cpu_seconds(database_pid) - database_cpu) if database_pid else 0.0
    return phases, server_cpu, database_cpu


def time_reports(url: str, token: str) -> tuple[float, float]:
    """Seconds to answer the levels report for the whole fleet, then for one patched target."""
    target = UserspaceTarget(build_id=library_pool()[0]["build_id"], soname="").key
    spent = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as admin:
        for params in ({}, {"target": target}):
            started = time.perf_counter()
            admin.get("/api/v1/admin/reports/levels", params=params, timeout=600).raise_for_status()
            spent.append(round(time.perf_counter() - started, 2))
    return spent[0], spent[1]


def rate(phases: list[Phase]) -> float:
    count = sum(len(phase.latencies) for phase in phases)
    return count / (max(p.end for p in phases) - min(p.start for p in phases))


def run_one(
    backend: str,
    workers: int,
    database_url: str,
    options: argparse.Namespace,
    key_dir: Path,
    database_pid: int | None,
) -> list[Result]:
    """One server; the fleet split evenly between the clients, each half measured on its own."""
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
    results = []
    try:
        token = create_admin_token(data_dir, database_url)
        upload_bundles(server.url, token, key_dir)
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}
        ) as admin:
            key = admin.post("/api/v1/admin/keys", json={"name": "fleet"}).json()["key"]
        processes = options.client_processes
        for index, client in enumerate(options.client):
            numbers = range(index, options.hosts, len(options.client))
            specs: list[Spec] = [("register", key, numbers[i::processes]) for i in range(processes)]
            phases, reg_server_cpu, _ = measure(server, database_pid, client, specs, options, True)
            hosts = [
                (body["host_id"], body["token"])
                for phase in phases
                for body in map(json.loads, phase.answers)
            ]
            registrations_per_s = rate(phases)
            specs = [("checkin", hosts[i::processes], i) for i in range(processes)]
            phases, server_cpu, database_cpu = measure(
                server, database_pid, client, specs, options, False
            )
            levels_report_s, target_report_s = time_reports(server.url, token)
            latencies = sorted(value for phase in phases for value in phase.latencies)
            count = max(1, len(latencies))
            results.append(
                Result(
                    backend=backend,
                    workers=workers,
                    client=client,
                    hosts=len(hosts),
                    registrations_per_s=round(registrations_per_s, 1),
                    registration_server_cpu_ms=round(reg_server_cpu * 1000 / len(numbers), 3),
                    checkins=len(latencies),
                    checkins_per_s=round(rate(phases), 1),
                    p50_ms=round(percentile(latencies, 0.50) * 1000, 2),
                    p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
                    errors=sum(phase.errors for phase in phases) + len(numbers) - len(hosts),
                    server_cpu_ms=round(server_cpu * 1000 / count, 3),
                    database_cpu_ms=round(database_cpu * 1000 / count, 3),
                    client_cpu_ms=round(sum(p.client_cpu for p in phases) * 1000 / count, 3),
                    client_floor_ms=options.floors[client],
                    levels_report_s=levels_report_s,
                    target_report_s=target_report_s,
                )
            )
    finally:
        server.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument(
        "--backend", choices=["sqlite", "postgresql"], nargs="+", default=["sqlite", "postgresql"]
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--client",
        choices=sorted(DRIVERS),
        nargs="+",
        default=["lean", "httpx"],
        help="clients to compare; the hosts are split evenly between them",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--libraries", type=int, default=20, help="libraries per host inventory")
    parser.add_argument("--pool-size", type=int, default=10, help="database connections per worker")
    parser.add_argument(
        "--shared-connections",
        action="store_true",
        help="send every host's requests over --concurrency shared keep-alive connections "
        "(default: each request on a new connection, as hosts checking in do)",
    )
    parser.add_argument(
        "--pg-socket",
        action="store_true",
        help="reach PostgreSQL over its Unix socket (same machine) instead of TCP on loopback",
    )
    options = parser.parse_args()

    options.floors = {client: round(client_floor(client, options), 3) for client in options.client}
    for client, floor in options.floors.items():
        print(f"client floor {client:6} {floor} ms CPU per check-in request", flush=True)
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
                url = cluster.create_database(f"fleet_{number}", options.pg_socket)
            else:
                url = f"sqlite:///{tempfile.mkdtemp(prefix='nonstop-fleet-db-')}/fleet.db"
            database_pid = cluster.pid if backend == "postgresql" and cluster else None
            for result in run_one(backend, workers, url, options, key_dir, database_pid):
                results.append(result)
                print(
                    f"{backend:10} workers={workers} client={result.client:5} "
                    f"hosts={result.hosts}  register {result.registrations_per_s:7.1f}/s  "
                    f"check-ins {result.checkins_per_s:7.1f}/s  "
                    f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                    f"errors {result.errors}  CPU ms/check-in: server {result.server_cpu_ms} "
                    f"db {result.database_cpu_ms} client {result.client_cpu_ms} "
                    f"(floor {result.client_floor_ms}); registration server "
                    f"{result.registration_server_cpu_ms}; levels report "
                    f"{result.levels_report_s} s (one target {result.target_report_s} s)",
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
