"""The patch-object linker on objects gcc really produces."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from nonstop.userspace.errors import LinkError
from nonstop.userspace.linker import PAGE, prepare_link
from nonstop.userspace.scope import Resolved

BASE = 0x7F12_3400_0000
FAR = BASE + (8 << 30)  # beyond rel32 reach: calls must go through a stub


def compile_object(tmp_path: Path, source: str) -> bytes:
    (tmp_path / "p.c").write_text(source)
    subprocess.run(
        ["gcc", "-O2", "-fPIC", "-ffunction-sections", "-fdata-sections", "-c", "-o",
         str(tmp_path / "p.o"), str(tmp_path / "p.c")],
        check=True,
    )  # fmt: skip
    return (tmp_path / "p.o").read_bytes()


def test_sections_are_laid_out_and_relocated(fixture_build):
    addresses = {"nsfix_calls": BASE - 0x2000, "hits": BASE - 0x3000, "table": BASE - 0x4000,
                 "strlen": FAR, "memcpy": FAR + 64, "read": BASE - 0x5000}  # fmt: skip
    link = prepare_link(
        fixture_build.patch_object(1).read_bytes(), 256, lambda n: Resolved(addresses[n], "test")
    )
    assert link.rx_size % PAGE == 0 and link.rw_size == PAGE
    assert set(link.external) == set(addresses)
    rx, rw = link.relocate(BASE)
    got = {name: struct.unpack_from("<Q", rx, slot)[0] for name, slot in link.got_slots.items()}
    assert got["nsfix_calls"] == addresses["nsfix_calls"]
    assert got["strlen"] == FAR
    # The patch's own initialised variable lives in the RW part, reached through its GOT slot.
    marker = link.symbol_offsets["nsfix_level_marker"]
    assert marker >= link.rx_size
    assert rw[marker - link.rx_size : marker - link.rx_size + 4] == struct.pack("<i", 1000)
    assert got["nsfix_level_marker"] == BASE + marker
    # strlen is out of reach: the call site must jump to its stub, which jumps through the GOT.
    stub = link.stubs["strlen"]
    assert rx[stub : stub + 2] == b"\xff\x25"
    (displacement,) = struct.unpack_from("<i", rx, stub + 2)
    assert stub + 6 + displacement == link.got_slots["strlen"]


def test_thread_local_variables_are_refused(tmp_path):
    obj = compile_object(tmp_path, "__thread int counter; int bump(void) { return ++counter; }")
    with pytest.raises(LinkError, match="thread-local"):
        prepare_link(obj, 256, lambda name: None)


def test_constructors_are_refused(tmp_path):
    obj = compile_object(
        tmp_path, "int x; __attribute__((constructor)) static void s(void) { x = 1; }"
    )
    with pytest.raises(LinkError, match="constructors"):
        prepare_link(obj, 256, lambda name: None)


def test_unresolved_symbol_refuses_the_whole_patch(tmp_path):
    obj = compile_object(tmp_path, "int nowhere(int); int f(int a) { return nowhere(a) + 1; }")
    with pytest.raises(LinkError, match="undefined symbol nowhere"):
        prepare_link(obj, 256, lambda name: None)


def test_not_an_object_is_refused():
    with pytest.raises(LinkError):
        prepare_link(b"\x7fELF garbage", 256, lambda name: None)
