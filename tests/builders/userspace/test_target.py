"""Building against a real target binary: reproduction by build-id, a stripped library, links."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from nonstop.builders.errors import BuilderError
from nonstop.builders.userspace.builder import build_userspace
from nonstop.builders.userspace.recipe import load_recipe
from nonstop.bundle import SigningKey
from nonstop.bundle.identity import userspace_target_of
from nonstop.bundle.symbols import SymbolMap
from tests.builders.userspace.conftest import LIBVULN, BuildFixes, write_recipe


def test_stripped_target_fix_calls_static_function_through_symbol_map(
    build_fixes: BuildFixes, stripped_libvuln: Path
) -> None:
    with stripped_libvuln.open("rb") as handle:
        assert ELFFile(handle).get_section_by_name(".symtab") is None, "fixture must be stripped"
    built = build_fixes("static-call", target=stripped_libvuln)
    reproduction = built.result.reproduction
    assert reproduction.matches and not reproduction.build_is_target
    bundle = built.bundle(1)
    assert bundle.manifest.target.build_id == userspace_target_of(stripped_libvuln).build_id
    assert [(f.target, f.replacement) for f in bundle.manifest.functions] == [
        ("vuln_clamp_id", "vuln_clamp_id.patched")
    ]
    symbols = SymbolMap.from_json_bytes(bundle.payload("symbols"))
    # Both vuln.c and util.c define a static normalize(): the link names vuln.c's.
    files = sorted(str(s.file) for s in symbols.symbols if s.name == "normalize")
    assert files == ["util.c", "vuln.c"]
    linked = symbols.linked("normalize")
    assert linked is not None and linked.file == "vuln.c" and linked.type == "func"
    assert symbols.unique_local("normalize") is None, "the name alone is ambiguous"
    # The call in the patch is an undefined reference named as the link says.
    elf = ELFFile(io.BytesIO(bundle.payload("object")))
    table = elf.get_section_by_name(".symtab")
    assert isinstance(table, SymbolTableSection)
    undefined = {s.name for s in table.iter_symbols() if s["st_shndx"] == "SHN_UNDEF" and s.name}
    assert undefined == {"normalize"}


def test_target_that_the_build_does_not_reproduce_is_refused(
    tmp_path: Path, signing_key: SigningKey
) -> None:
    other = tmp_path / "other"
    shutil.copytree(LIBVULN, other)  # same source, other flags: a different binary
    subprocess.run(["make", "-s", "CFLAGS=-O1 -g -fPIC"], cwd=other, check=True)
    recipe = load_recipe(write_recipe(tmp_path / "r", ("bounds",), target=other / "libvuln.so.1"))
    with pytest.raises(BuilderError, match="DOES NOT match the target") as caught:
        build_userspace(recipe, signing_key, tmp_path / "out")
    assert str(userspace_target_of(other / "libvuln.so.1").build_id) in str(caught.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.nsb"))


def test_build_is_target_leaves_the_exact_library_to_deploy(build_fixes: BuildFixes) -> None:
    built = build_fixes("bounds")
    copy = built.result.target_copy
    assert copy is not None and copy.name == "libvuln.so.1"
    assert userspace_target_of(copy).build_id == built.bundle(1).manifest.target.build_id
    assert built.result.reproduction.target_path == copy


def test_payload_carries_symbol_map_and_fix_source(build_fixes: BuildFixes) -> None:
    bundle = build_fixes("bounds").bundle(1)
    roles = sorted(entry.role for entry in bundle.manifest.payload)
    assert roles == ["object", "source", "symbols"]
    assert bundle.payload("source") == (LIBVULN / "fixes" / "bounds.patch").read_bytes()
    document = json.loads(bundle.payload("symbols"))
    assert document["build_id"] == bundle.manifest.target.build_id
    names = {s["name"] for s in document["symbols"]}
    assert {"records", "normalize", "popcount_loop", "vuln_get"} <= names
