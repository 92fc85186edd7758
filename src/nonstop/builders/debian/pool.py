"""Source versions apt's index does not deliver, taken from the archive's pool once verified.

A Debian mirror's pool can hold a version its index no longer (or not yet)
lists, and an index can list a version whose files the mirror no longer
serves. ``fetch_from_pool`` looks for ``<source>_<version>.dsc`` in the pool
of each Debian archive apt is configured with (``apt.archive_entries``):
``<URI>/pool/<component>/<prefix>/<source>/``, with ``pool/updates/`` for a
security suite, the prefix being the first four letters of a ``lib*`` name
and the first letter of any other. Nothing it says is used before its
OpenPGP signature verifies against Debian's keyrings (``signatures``); then
its own fields must name the wanted source and version, and each file it
lists is downloaded from the same directory (else from the package's
directory in another archive's pool: a security archive can keep an upstream
tarball only in the main archive's), at most its listed size, and checked
against its SHA-256 (``dpkg-source -x`` checks again).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from debian.deb822 import Dsc

from nonstop.builders.debian.apt import APT_CONFIG, archive_entries
from nonstop.builders.debian.signatures import KEYRING_DIR, Signer, verify_dsc
from nonstop.builders.errors import BuilderError

MAX_DSC_BYTES = 1 << 20
MAX_FILE_BYTES = 4 << 30
TIMEOUT = 60.0
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.~_-]*")


@dataclass(frozen=True)
class PoolOrigin:
    """Where a source version came from when apt's index did not deliver it, and who signed it."""

    url: str
    signer: Signer
    trusted_expired_key: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "signer": self.signer.user_id,
            "fingerprint": self.signer.fingerprint,
            "keyring": self.signer.keyring,
            "signed": self.signer.signed,
            "key_expired": self.signer.expired,
            "trusted_expired_key": self.trusted_expired_key,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolOrigin:
        signer = Signer(
            data["fingerprint"], data["signer"], data["keyring"], data["signed"],
            data["key_expired"],
        )  # fmt: skip
        return cls(data["url"], signer, bool(data["trusted_expired_key"]))

    def describe(self) -> str:
        override = " (accepted by --trust-expired-key)" if self.trusted_expired_key else ""
        return f"from the pool, not apt's index: {self.url}, signed by {self.signer.describe()}" + (
            override
        )


def pool_directories(package: str, config: Path = APT_CONFIG) -> list[str]:
    """The pool directories where PACKAGE's files would be, one per archive and component."""
    prefix = package[:4] if package.startswith("lib") and len(package) > 3 else package[0]
    found: dict[str, None] = {}
    for entry in archive_entries(config):
        updates = "updates/" if entry.suite.endswith(("-security", "/updates")) else ""
        for component in entry.components:
            found[f"{entry.uri}/pool/{updates}{component}/{prefix}/{package}"] = None
    return list(found)


def fetch_from_pool(
    package: str,
    version: str,
    work: Path,
    say: Callable[[str], None],
    *,
    trust_expired: frozenset[str] = frozenset(),
    config: Path = APT_CONFIG,
    keyring_dir: Path = KEYRING_DIR,
) -> PoolOrigin | None:
    """The .dsc of PACKAGE VERSION and its files, into WORK; None if no pool holds it."""
    name = f"{package}_{version.split(':', 1)[-1]}.dsc"
    directories = pool_directories(package, config)
    if not directories:
        raise BuilderError("apt's sources name no Debian archive whose pool could be searched")
    with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
        for directory in directories:
            if _download(client, f"{directory}/{name}", work / name, MAX_DSC_BYTES) is None:
                continue
            say(f"{package} {version}: found {directory}/{name}; verifying its signature")
            signer, text = verify_dsc(work / name, keyring_dir, trust_expired)
            origin = PoolOrigin(f"{directory}/{name}", signer, signer.expired_before_signing)
            say(f"{package} {version}: signed by {signer.describe()}")
            # The .dsc's own directory first; a security archive may keep an upstream tarball
            # only in the main archive's pool (curl). The signed SHA-256 says which is right.
            sources = [directory, *(other for other in directories if other != directory)]
            for file, size, sha256 in _listed_files(Dsc(text), package, version, name):
                say(f"{package} {version}: downloading {file} ({size} bytes) from the pool")
                for source in sources:
                    digest = _download(client, f"{source}/{file}", work / file, size)
                    if digest is not None:
                        break
                else:
                    raise BuilderError(f"the pool lists {file} in {name} but does not serve it")
                if digest != sha256:
                    raise BuilderError(f"{file} from the pool does not match its SHA-256 in {name}")
            return origin
    return None


def _listed_files(dsc: Dsc, package: str, version: str, name: str) -> list[tuple[str, int, str]]:
    """(name, size, SHA-256) of each file the signed DSC lists, once its fields are checked."""
    if dsc.get("Source") != package or dsc.get("Version") != version:
        raise BuilderError(
            f"{name} is signed but describes {dsc.get('Source')} {dsc.get('Version')}, "
            f"not {package} {version}: refused"
        )
    files = []
    for entry in dsc.get("Checksums-Sha256", []):
        file, size = entry.get("name", ""), entry.get("size", "")
        if not _FILE_NAME.fullmatch(file) or not file.startswith(f"{package}_"):
            raise BuilderError(f"{name} lists a file named {file!r}: refused")
        if not size.isdigit() or int(size) > MAX_FILE_BYTES:
            raise BuilderError(f"{name} lists {file} with size {size!r}: refused")
        files.append((file, int(size), entry.get("sha256", "").lower()))
    if not files:
        raise BuilderError(f"{name} lists no files with a SHA-256: refused")
    return files


def _download(client: httpx.Client, url: str, path: Path, limit: int) -> str | None:
    """URL into PATH (at most LIMIT bytes) and its SHA-256; None when the server has no such
    file (404 or 410). Any other failure is a BuilderError."""
    digest = hashlib.sha256()
    try:
        with client.stream("GET", url) as response:
            if response.status_code in (404, 410):
                return None
            if response.status_code != 200:
                raise BuilderError(f"{url}: HTTP {response.status_code}")
            size = 0
            with path.open("wb") as output:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise BuilderError(f"{url} is larger than {limit} bytes: refused")
                    digest.update(chunk)
                    output.write(chunk)
    except httpx.HTTPError as exc:
        raise BuilderError(f"cannot download {url}: {exc}") from None
    return digest.hexdigest()
