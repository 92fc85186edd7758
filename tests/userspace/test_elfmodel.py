"""ELF models are cached per build-id on disk: a cold run reads them back instead of parsing."""

from __future__ import annotations

from pathlib import Path

from nonstop.userspace.elfmodel import ModelCache, read_build_id

LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")


def test_model_is_read_back_from_disk_without_the_file(tmp_path: Path):
    with LIBC.open("rb") as handle:
        build_id = read_build_id(handle)
    assert build_id is not None
    parsed = ModelCache(tmp_path).get(build_id, LIBC)
    assert [d.type for d in parsed.defined("strlen")] == ["ifunc"]
    cold = ModelCache(tmp_path).get(build_id, tmp_path / "no-such-file")
    assert cold.symbols == parsed.symbols and cold.irelative == parsed.irelative


def test_damaged_cache_file_is_parsed_again(tmp_path: Path):
    with LIBC.open("rb") as handle:
        build_id = read_build_id(handle)
    assert build_id is not None
    (tmp_path / f"{build_id}.json").write_text("{not json")
    model = ModelCache(tmp_path).get(build_id, LIBC)
    assert model.build_id == build_id and model.defined("memcpy")
