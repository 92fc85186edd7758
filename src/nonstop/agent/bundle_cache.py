"""The agent's cache of verified bundles, content-addressed by SHA-256.

Bundles are re-verified whenever they are read back: the cache directory is
not trusted more than the network they came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nonstop.bundle import Bundle, TrustedKeys


class BundleCache:
    """One directory (``<cache_dir>/bundles``) of bundle files named ``<sha256>.nsb``.

    Only bytes that verified are stored; nothing read back is trusted until it verifies again.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.directory = cache_dir / "bundles"

    def path_for(self, sha256: str) -> Path:
        """Where the bundle with this digest is (or would be) kept; it may be absent or bad."""
        return self.directory / f"{sha256}.nsb"

    def store(self, bundle_bytes: bytes, trusted: TrustedKeys) -> Bundle:
        """Verify BUNDLE_BYTES and keep them; return the verified bundle."""
        from nonstop.bundle import open_bundle

        bundle = open_bundle(bundle_bytes, trusted)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path_for(bundle.sha256)
        temporary = target.with_suffix(f".tmp.{os.getpid()}")
        temporary.write_bytes(bundle_bytes)
        os.replace(temporary, target)
        return bundle

    def load(self, sha256: str, trusted: TrustedKeys) -> Bundle:
        """The cached bundle with this digest, verified again (BundleError if bad or absent)."""
        from nonstop.bundle import open_bundle

        return open_bundle(self.path_for(sha256), trusted)
