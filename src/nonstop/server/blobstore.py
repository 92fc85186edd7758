"""Content-addressed storage of bundle bytes, named by their SHA-256.

Two stores with one interface: a directory (``<data_dir>/blobs/ab/abcdef...``,
written to a temporary file, fsynced and renamed, so a reader never sees half a
blob; directories 0700, files 0600) for one machine or a shared filesystem, and a database table for
stateless replicas that share only PostgreSQL. A blob is written before the
bundle row that names it is committed; a blob whose row never committed is an
unreferenced file that the next upload of the same bytes simply reuses.
A full disk (or quota) refuses the upload with 507 and stores nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, select

from nonstop.server.db import Database, is_disk_full, private_dir
from nonstop.server.errors import InsufficientStorage
from nonstop.server.models import blobs


class BlobStore(Protocol):
    """Bundle bytes by their SHA-256, used inside the request's database transaction."""

    def put(self, connection: Connection, sha256: str, data: bytes) -> None:
        """Store DATA as SHA256 (the caller's hash of it, not checked here) unless present.

        507 (``InsufficientStorage``) when the disk is full and nothing was stored.
        """
        ...

    def get(self, connection: Connection, sha256: str) -> bytes | None:
        """The bytes stored as SHA256, or None."""
        ...


class DirectoryBlobStore:
    """Blobs as files under ROOT (made 0700, its parent too); the connection is not used."""

    def __init__(self, root: Path) -> None:
        self.root = root
        private_dir(root.parent)
        private_dir(root)

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, connection: Connection, sha256: str, data: bytes) -> None:
        """Write the file unless it exists (temp file, fsync, rename); 507 if the disk is full."""
        path = self._path(sha256)
        if path.exists():
            return
        try:
            self._write(path, data)
        except OSError as exc:
            if is_disk_full(exc):
                raise InsufficientStorage(
                    f"no space left in the blob store ({os.strerror(exc.errno or 0)}): "
                    "free space on the server's data disk, then upload again"
                ) from exc
            raise

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")  # 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def get(self, connection: Connection, sha256: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""
        try:
            return self._path(sha256).read_bytes()
        except FileNotFoundError:
            return None


class DatabaseBlobStore:
    """Blobs as rows of the ``blobs`` table, written in the caller's transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, connection: Connection, sha256: str, data: bytes) -> None:
        """Insert the row unless SHA256 is stored; it commits with CONNECTION's transaction."""
        statement = self._db.insert_ignoring_duplicates(blobs, "sha256")
        connection.execute(statement.values(sha256=sha256, data=data))

    def get(self, connection: Connection, sha256: str) -> bytes | None:
        data = connection.execute(select(blobs.c.data).where(blobs.c.sha256 == sha256)).scalar()
        return bytes(data) if data is not None else None
