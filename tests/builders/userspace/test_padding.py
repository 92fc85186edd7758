"""A function of the section build that differs from the target's only in alignment padding."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nonstop.builders.userspace.padding import same_but_padding
from nonstop.builders.userspace.targetsyms import TargetSymbols
from nonstop.bundle.symbols import loaded_bytes, symbol_map_of

PUSH, MOV, POP, RET = b"\x55", b"\x48\x89\xe5", b"\x5d", b"\xc3"
NOPW = b"\x66\x0f\x1f\x44\x00\x00"  # 6-byte nopw, as gcc pads before a loop label


def test_nop_padding_is_not_a_difference_other_instructions_are() -> None:
    plain = PUSH + MOV + POP + RET
    assert same_but_padding(PUSH + MOV + NOPW + POP + RET, plain)
    assert same_but_padding(PUSH + MOV + b"\x66\x90" + POP + RET, plain + b"\x90")
    assert not same_but_padding(PUSH + MOV + RET, plain)  # an instruction less
    assert not same_but_padding(PUSH + b"\x48\x89\xe7" + POP + RET + b"\x90", plain)  # rdi
    assert not same_but_padding(b"\xff" + plain, plain + b"\x90")  # does not decode


def test_a_target_function_is_compared_by_code_when_the_sizes_differ(tmp_path: Path) -> None:
    source = tmp_path / "f.c"
    source.write_text(
        "static int g(int *v, int n) { int s = 0; for (int i = 0; i < n; i++) s += v[i] * i;"
        " return s; }\nint f(int *v, int n) { return g(v, n) + 1; }\n"
    )
    library = tmp_path / "libf.so"
    subprocess.run(["gcc", "-O2", "-g", "-shared", "-fPIC", "-o", str(library), str(source)],
                   check=True)  # fmt: skip
    symbols = symbol_map_of(library)
    targets = TargetSymbols(symbols, library)
    located = targets.locate("f", "f.c")
    assert not isinstance(located, str)
    code = loaded_bytes(library, located.symbol.value, located.symbol.size)
    assert code is not None and len(code) == located.symbol.size
    assert targets.same_function(located, code)
    assert targets.same_function(located, code + NOPW)  # the same code, other padding
    assert not targets.same_function(located, code[:-1] + b"\x90" + code[-1:] + b"\xc3")
    assert not TargetSymbols(symbols).same_function(located, code + NOPW)  # no file: size only
