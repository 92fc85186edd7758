"""ELF models are cached per file content on disk: a cold run reads them back instead of parsing,
and only for files that no one but root can change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nonstop.userspace.elfmodel import ModelCache, read_build_id

LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")


def build_id_of(path: Path) -> str:
    with path.open("rb") as handle:
        build_id = read_build_id(handle)
    assert build_id is not None
    return build_id


def test_model_is_read_back_from_disk_without_parsing(tmp_path: Path):
    build_id = build_id_of(LIBC)
    with LIBC.open("rb") as handle:
        key = ModelCache(tmp_path).key(handle)
        assert key.sealed and key.name == key.sha256
        parsed = ModelCache(tmp_path).get(build_id, handle, key)
    assert [d.type for d in parsed.defined("strlen")] == ["ifunc"]
    assert (tmp_path / f"{key.sha256}.json").exists()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with empty.open("rb") as handle:  # same key, other bytes: the cache answers, no parse
        cold = ModelCache(tmp_path).get(build_id, handle, key)
    assert cold.symbols == parsed.symbols and cold.irelative == parsed.irelative


def test_damaged_cache_file_is_parsed_again(tmp_path: Path):
    build_id = build_id_of(LIBC)
    with LIBC.open("rb") as handle:
        key = ModelCache(tmp_path).key(handle)
        (tmp_path / f"{key.sha256}.json").write_text("{not json")
        model = ModelCache(tmp_path).get(build_id, handle, key)
    assert model.build_id == build_id and model.defined("memcpy")


def test_a_file_its_owner_can_rewrite_is_never_cached_on_disk(tmp_path: Path):
    copy = tmp_path / "libc-copy.so"
    shutil.copyfile(LIBC, copy)
    os.chown(copy, 65534, 65534)
    cache = ModelCache(tmp_path / "cache")
    with copy.open("rb") as handle:
        key = cache.key(handle)
        model = cache.get(build_id_of(copy), handle, key)
    assert model.defined("memcpy") and not key.sealed
    assert key.name != key.sha256 and str(os.stat(copy).st_ino) in key.name
    assert not (tmp_path / "cache").exists()
