"""Everything a request handler needs, built once per server process from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from nonstop.bundle import TrustedKeys
from nonstop.server.auth import KnownHostSecrets
from nonstop.server.blobstore import BlobStore, DatabaseBlobStore, DirectoryBlobStore
from nonstop.server.catalog import Catalog
from nonstop.server.db import Database
from nonstop.server.metrics import FindingsCollector, HostStateCollector
from nonstop.server.ratelimit import WindowLimiter
from nonstop.server.settings import ServerSettings
from nonstop.server.vulnerabilities import Vulnerabilities


@dataclass
class ServerContext:
    """The state one server process shares between its requests, stored as ``app.state.ctx``.

    Rate limits, caches and the known-host table are per process (not shared with other
    workers or replicas); the database is what they share.
    """

    settings: ServerSettings
    db: Database
    blobs: BlobStore
    catalog: Catalog
    vendor_keys: TrustedKeys
    registrations: WindowLimiter
    auth_failures: WindowLimiter  # per client address
    credential_failures: WindowLimiter  # per credential presented (auth.credential_key)
    host_states: HostStateCollector
    known_hosts: KnownHostSecrets
    vulnerabilities: Vulnerabilities
    findings: FindingsCollector

    @classmethod
    def create(cls, settings: ServerSettings) -> ServerContext:
        """Build the context from SETTINGS. It creates the SQLite file and the blob directory it
        uses if missing (private modes), but opens no connection yet (the asyncio pool is
        opened at startup). Without a vendor-keys directory it trusts no key: uploads get 400.
        """
        db = Database(settings.effective_database_url, settings.db_pool_size)
        keys_dir = settings.effective_vendor_keys_dir
        # No directory yet: the server runs, and refuses uploads until keys are configured.
        vendor_keys = TrustedKeys.from_dir(keys_dir) if keys_dir.is_dir() else TrustedKeys([])
        blobs: BlobStore = (
            DatabaseBlobStore(db)
            if settings.blob_store == "database"
            else DirectoryBlobStore(settings.blob_dir)
        )
        vulnerabilities = Vulnerabilities(db, settings.catalog_ttl_seconds)
        return cls(
            settings=settings,
            db=db,
            blobs=blobs,
            catalog=Catalog(db, settings.catalog_ttl_seconds),
            vendor_keys=vendor_keys,
            registrations=WindowLimiter(settings.registrations_per_minute),
            auth_failures=WindowLimiter(settings.failed_auth_per_minute),
            credential_failures=WindowLimiter(settings.failed_auth_per_minute),
            host_states=HostStateCollector(db, settings.stale_after_days),
            known_hosts=KnownHostSecrets(),
            vulnerabilities=vulnerabilities,
            findings=FindingsCollector(vulnerabilities.computed_fleet),
        )
