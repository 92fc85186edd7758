"""Database tables (SQLAlchemy Core): the schema at the newest migration.

Code queries these tables with Core statements: the check-in path runs a
handful of statements per request, and Core keeps each one explicit. The
migrations in ``migrations/versions`` must produce exactly this schema; a test
compares the two on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names, so migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (no zones) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store VALUE in UTC (naive on SQLite); a naive datetime is refused, not guessed."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC: the kind ``UTCDateTime`` columns accept."""
    return datetime.now(UTC)


# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
HEX_ID = 32  # random identifiers: 128 bits as hex
SHA256_HEX = 64


def _id(name: str = "id") -> Column[Any]:
    return Column(name, String(HEX_ID), primary_key=True)


feeds = Table(
    "feeds",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("description", String(500), nullable=False, server_default=""),
    # A bundle becomes visible on this feed DELAY_HOURS after it was published.
    Column("delay_hours", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
)

registration_keys = Table(
    "registration_keys",
    metadata,
    _id(),
    Column("name", String(128), nullable=False),
    Column("secret_hash", String(SHA256_HEX), nullable=False),
    Column("feed", String(64), ForeignKey("feeds.name"), nullable=False),
    Column("sticky", String(32)),
    Column("labels", JSON, nullable=False),
    Column("host_limit", Integer),
    # Hosts registered with this key and not unregistered, kept while host_limit is set
    # (checked against it atomically); views count the hosts table instead.
    Column("host_count", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

hosts = Table(
    "hosts",
    metadata,
    _id(),
    Column("secret_hash", String(SHA256_HEX), nullable=False),
    Column("registration_key_id", String(HEX_ID), ForeignKey("registration_keys.id"), index=True),
    Column("hostname", String(255), nullable=False),
    Column("feed", String(64), ForeignKey("feeds.name"), nullable=False),
    Column("sticky", String(32)),
    Column("labels", JSON, nullable=False),
    Column("distro_id", String(64)),
    Column("distro_version", String(64)),
    Column("kernel_release", String(255)),
    Column("kernel_build_id", String(128)),
    Column("kernel_version_digest", String(SHA256_HEX)),
    Column("agent_version", String(64)),
    # The targets of the last check-in: a JSON array of inventory.TargetRow values, each an
    # array in field order; one text value (a first check-in writes one compressed value
    # instead of a row per target).
    Column("inventory", Text),
    # SHA-256 of that text: an unchanged inventory is not rewritten.
    Column("inventory_digest", String(SHA256_HEX)),
    Column("registered_at", UTCDateTime, nullable=False),
    # Not indexed: the check-in updates it every time (see migration 0003).
    Column("last_checkin_at", UTCDateTime),
    Column("checkin_count", Integer, nullable=False, server_default="0"),
    Column("unregistered_at", UTCDateTime),
    # The installed-package list the host reported last (package_sets.digest), if the
    # server holds it.
    Column("packages_digest", String(SHA256_HEX)),
)

# Installed-package lists, one per distinct list: hosts of one image share it.
package_sets = Table(
    "package_sets",
    metadata,
    Column("digest", String(SHA256_HEX), primary_key=True),
    Column("manager", String(8), nullable=False),
    # JSON array of [name, version, source, source_version, arch], sorted.
    Column("packages", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# What each feed says of a CVE in a source package of a release (nonstop.cve.model.Advisory).
advisories = Table(
    "advisories",
    metadata,
    Column("release", String(32), primary_key=True),
    Column("source", String(200), primary_key=True),
    Column("cve", String(32), primary_key=True),
    Column("feed", String(32), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("fixed_version", String(256)),
    Column("urgency", String(32)),
    Column("cvss", Float),
    Column("nodsa", String(500)),
    Column("description", Text),
    Index("ix_advisories_cve", "cve"),
    Index("ix_advisories_feed", "feed"),
)

# One row per import into advisories: the newest id tells server processes to re-match.
advisory_imports = Table(
    "advisory_imports",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("feed", String(32), nullable=False),
    Column("advisories", Integer, nullable=False),
)

# Per synced feed URL: what the last download returned, for If-Modified-Since / If-None-Match.
feed_downloads = Table(
    "feed_downloads",
    metadata,
    Column("url", String(2048), primary_key=True),
    Column("last_modified", String(64)),
    Column("etag", String(256)),
    Column("fetched_at", UTCDateTime),
    Column("records", Integer),
    Column("error", String(500)),
)

bundles = Table(
    "bundles",
    metadata,
    Column("sha256", String(SHA256_HEX), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("target_key", String(200), nullable=False),
    Column("target_name", String(255), nullable=False),
    Column("level", Integer, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("effective_version", String(255), nullable=False),
    Column("cves", JSON, nullable=False),
    Column("manifest", JSON, nullable=False),
    Column("published_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime),
    Column("uploaded_by", String(160), nullable=False),
    UniqueConstraint("target_key", "level"),
    Index("ix_bundles_kind", "kind"),
)

blobs = Table(
    "blobs",
    metadata,
    Column("sha256", String(SHA256_HEX), primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    _id(),
    Column("name", String(128), nullable=False),
    Column("secret_hash", String(SHA256_HEX), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(160), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(255), nullable=False),
    Column("details", JSON, nullable=False),
)

checkins = Table(
    "checkins",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("host_id", String(HEX_ID), ForeignKey("hosts.id", ondelete="CASCADE"), nullable=False),
    # Chosen by the agent: a retried check-in carries the same id and is recorded once.
    Column("checkin_id", String(36), nullable=False),
    Column("received_at", UTCDateTime, nullable=False, index=True),
    Column("agent_version", String(64)),
    UniqueConstraint("host_id", "checkin_id"),
)
