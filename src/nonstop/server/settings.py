"""Server settings: where data lives, which database, limits, and how they reach workers.

Settings come from `nonstop serve` options (or their environment variables).
Uvicorn worker processes import the app by name, so the settings travel to them
as one JSON document in the environment (``SETTINGS_ENV``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

SETTINGS_ENV = "NONSTOP_SERVER_SETTINGS"
DEFAULT_DATA_DIR = Path("/var/lib/nonstop-server")
BlobStoreKind = Literal["directory", "database"]


class SettingsError(Exception):
    """A setting is invalid (bad listen address, unknown blob store, ...)."""


@dataclass(frozen=True)
class ServerSettings:
    """Every setting of one server run (immutable); a bad blob store, port or worker count
    raises ``SettingsError``.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    # Empty: SQLite in the data dir (the embedded default).
    database_url: str = ""
    # Empty: <data_dir>/vendor-keys. Public keys only: the server never signs anything.
    vendor_keys_dir: str = ""
    # "directory": <data_dir>/blobs (one machine, or a shared filesystem);
    # "database": bundle bytes in the database (stateless replicas).
    blob_store: BlobStoreKind = "directory"
    host: str = "127.0.0.1"
    port: int = 8740
    workers: int = 1
    # Every request body except bundle uploads (a check-in inventory is far smaller).
    max_request_bytes: int = 2 * 1024 * 1024
    max_bundle_bytes: int = 64 * 1024 * 1024
    # Per server process, per client address (failed auth: per credential too); 0 disables.
    registrations_per_minute: int = 60
    failed_auth_per_minute: int = 30
    stale_after_days: int = 7
    # How long a process may serve bundle and feed tables from memory before re-reading them.
    catalog_ttl_seconds: float = 5.0
    checkin_interval_seconds: int = 3600
    checkin_history_days: int = 30
    db_pool_size: int = 10
    # Threads per process running request handlers. Few: handlers are short, and many
    # threads only fight over the GIL (and, on SQLite, over the one write lock).
    threads: int = 8
    access_log: bool = True
    forwarded_allow_ips: str = ""

    def __post_init__(self) -> None:
        if self.blob_store not in ("directory", "database"):
            raise SettingsError(
                f"unknown blob store {self.blob_store!r}: use directory or database"
            )
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port {self.port} is out of range")
        if self.workers < 1:
            raise SettingsError("workers must be at least 1")

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'nonstop.db'}"

    @property
    def effective_vendor_keys_dir(self) -> Path:
        return Path(self.vendor_keys_dir) if self.vendor_keys_dir else self.data_dir / "vendor-keys"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    def to_json(self) -> str:
        """The settings as one JSON document, for ``SETTINGS_ENV``."""
        document: dict[str, Any] = asdict(self)
        document["data_dir"] = str(self.data_dir)
        return json.dumps(document)

    @classmethod
    def from_json(cls, text: str) -> ServerSettings:
        """Settings from a ``to_json`` document; keys that name no setting are ignored."""
        document = json.loads(text)
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in document.items() if key in known}
        values["data_dir"] = Path(values.get("data_dir", DEFAULT_DATA_DIR))
        return cls(**values)

    @classmethod
    def from_environment(cls) -> ServerSettings:
        """What ``nonstop serve`` put in ``SETTINGS_ENV`` for its workers, else the defaults."""
        text = os.environ.get(SETTINGS_ENV)
        return cls.from_json(text) if text else cls()


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [ADDR]:PORT) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SettingsError(f"listen address {value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)
