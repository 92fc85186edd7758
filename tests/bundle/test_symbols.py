"""The symbol map payload, read from a real unstripped library."""

from __future__ import annotations

import subprocess

import pytest

from nonstop.bundle.errors import SymbolMapError
from nonstop.bundle.symbols import SymbolMap, symbol_map_of


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    directory = tmp_path_factory.mktemp("symlib")
    (directory / "a.c").write_text(
        "static int counter;\n"
        "static int __attribute__((noinline)) helper(int x) { return x + counter++; }\n"
        "int api_a(int x) { return helper(x); }\n"
    )
    (directory / "b.c").write_text(
        "static int __attribute__((noinline)) helper(int x) { return x * 2; }\n"
        "int api_b(int x) { return helper(x); }\n"
    )
    lib = directory / "libtwo.so"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-shared",
            "-fPIC",
            "-o",
            str(lib),
            str(directory / "a.c"),
            str(directory / "b.c"),
        ],
        check=True,
    )
    return lib


def test_locals_carry_their_source_file(library):
    symbol_map = symbol_map_of(library)
    helpers = [s for s in symbol_map.symbols if s.name == "helper"]
    assert sorted(str(s.file) for s in helpers) == ["a.c", "b.c"]
    assert all(s.bind == "local" and s.type == "func" for s in helpers)
    assert symbol_map.unique_local("helper") is None  # ambiguous: two files
    counter = symbol_map.unique_local("counter")
    assert counter is not None and counter.type == "object" and counter.file == "a.c"
    api = next(s for s in symbol_map.symbols if s.name == "api_a")
    assert api.bind == "global" and api.file is None


def test_roundtrip_with_links(library):
    symbol_map = symbol_map_of(library)
    index = next(
        i for i, s in enumerate(symbol_map.symbols) if s.name == "helper" and s.file == "b.c"
    )
    linked = SymbolMap(symbol_map.build_id, symbol_map.symbols, {"helper": index})
    again = SymbolMap.from_json_bytes(linked.to_json_bytes())
    assert again == linked
    assert again.linked("helper") == symbol_map.symbols[index]


def test_stripped_library_has_no_map(library, tmp_path):
    stripped = tmp_path / "stripped.so"
    subprocess.run(["strip", "-o", str(stripped), str(library)], check=True)
    with pytest.raises(SymbolMapError, match="stripped"):
        symbol_map_of(stripped)


@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b'{"format_version": 2}',
        b'{"format_version": 1, "build_id": "x", "symbols": [{}]}',
        b'{"format_version": 1, "build_id": "x", "symbols": [], "links": {"a": 3}}',
    ],
)
def test_invalid_maps_are_refused(data):
    with pytest.raises(SymbolMapError):
        SymbolMap.from_json_bytes(data)
