"""A private PostgreSQL cluster for tests and benchmarks: initdb in a temp dir, loopback only.

PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` system user that Debian's package creates (through runuser).
Authentication is ``trust`` on 127.0.0.1 only: the cluster lives as long as
one test session or benchmark and holds nothing but throwaway data.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

PG_USER = "nonstop"


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries are installed."""


def find_bindir() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise PostgresUnavailable(
            "PostgreSQL server not installed (/usr/lib/postgresql/*/bin/postgres); "
            "scripts/install-system-deps.sh installs it"
        )
    return candidates[-1].parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="nonstop-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self.settings = settings or {}
        self._as_postgres = os.geteuid() == 0

    def _run(self, *argv: str) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> PostgresCluster:
        self.data.mkdir()
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.data, "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": "200",
            **self.settings,
        }
        option_text = " ".join(f"-c {key}={value}" for key, value in options.items())
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            option_text,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    @property
    def pid(self) -> int:
        """The postmaster's process id (its children are the backends)."""
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def url(self, database: str = "postgres", unix_socket: bool = False) -> str:
        """The URL of DATABASE over TCP on loopback, or over the cluster's Unix socket."""
        if unix_socket:
            return f"postgresql+psycopg://{PG_USER}@/{database}?host={self.root}&port={self.port}"
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, unix_socket: bool = False) -> str:
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name, unix_socket)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
