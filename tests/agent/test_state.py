"""Agent state documents and the verified-bundle cache."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest

from nonstop.agent.bundle_cache import BundleCache
from nonstop.agent.state import StateError, StateStore
from nonstop.bundle.errors import BundleError


def test_write_then_read_is_atomic_and_private(tmp_path):
    store = StateStore(tmp_path / "state")
    assert store.read("kernel") == {}
    store.write("kernel", {"level": 2})
    store.write("kernel", {"level": 3})
    assert store.read("kernel") == {"level": 3}
    assert stat.S_IMODE(store.path("kernel").stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["kernel.json"]


def test_corrupt_document_is_a_clear_error(tmp_path):
    store = StateStore(tmp_path)
    store.path("userspace").write_text("{torn")
    with pytest.raises(StateError, match="unreadable"):
        store.read("userspace")


def _bump(directory: str) -> None:
    store = StateStore(Path(directory))
    for _ in range(50):
        with store.locked("counter"):
            count = store.read("counter").get("n", 0)
            store.write("counter", {"n": count + 1})


def test_lock_serialises_writers_across_processes(tmp_path):
    workers = [multiprocessing.Process(target=_bump, args=(str(tmp_path),)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert StateStore(tmp_path).read("counter") == {"n": 200}


def test_cache_keeps_only_verified_bundles(tmp_path, make_bundle, trusted):
    cache = BundleCache(tmp_path)
    data = make_bundle()
    bundle = cache.store(data, trusted)
    assert cache.load(bundle.sha256, trusted).manifest == bundle.manifest
    with pytest.raises(BundleError):
        cache.store(data[:-5], trusted)
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 0x01
    cache.path_for(bundle.sha256).write_bytes(bytes(tampered))  # tampered on disk
    with pytest.raises(BundleError):
        cache.load(bundle.sha256, trusted)
