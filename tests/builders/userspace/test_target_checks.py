"""The builder refuses a replaced function the engine would refuse, with the engine's reason,
and records the original code of the others (checked by the engine in each process)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from nonstop.builders.userspace.builder import check_targets
from nonstop.bundle import FunctionPatch
from nonstop.bundle.symbols import replacement_refusal, symbol_map_of

SOURCE = """
static int impl(void) { return 1; }
static void *resolve(void) { return (void *)impl; }
int picked(void) __attribute__((ifunc("resolve")));
int plain(int x) { return x * 3 + 1; }
"""


def test_ifunc_is_refused_and_plain_functions_carry_their_code(tmp_path: Path) -> None:
    (tmp_path / "lib.c").write_text(SOURCE)
    library = tmp_path / "libpick.so"
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(tmp_path / "lib.c")], check=True
    )
    functions = [FunctionPatch("picked", "picked.patched"), FunctionPatch("plain", "plain.patched")]
    checked, refusals = check_targets(library, functions, symbol_map_of(library))
    assert [(r.symbol, r.reason) for r in refusals] == [
        ("picked", replacement_refusal("picked", "ifunc"))
    ]
    # plain's bytes, located with nm (not the builder's reader): offsets equal addresses here.
    line = subprocess.run(
        ["nm", "-S", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout
    fields = next(f for f in map(str.split, line.splitlines()) if f[-1] == "plain")
    value, size = int(fields[0], 16), int(fields[1], 16)
    with library.open("rb") as handle:
        handle.seek(value)
        expected = hashlib.sha256(handle.read(size)).hexdigest()
    assert {f.target: f.original_sha256 for f in checked}["plain"] == expected
