"""Reading an object's debug information: objects with thread-local variables (wolfssl's ecc.c)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nonstop.builders.userspace.dwarf import DebugInfo


def test_an_object_with_a_thread_local_variable_is_read(tmp_path: Path) -> None:
    # The DWARF location of a __thread variable holds an R_X86_64_DTPOFF32 relocation.
    source = tmp_path / "tls.c"
    source.write_text("static __thread int depth;\nint enter(void) { return ++depth; }\n")
    subprocess.run(
        ["gcc", "-O2", "-g", "-fPIC", "-c", str(source), "-o", str(tmp_path / "tls.o")],
        check=True,
    )
    relocations = subprocess.run(
        ["readelf", "-r", str(tmp_path / "tls.o")], capture_output=True, text=True, check=True
    ).stdout
    assert "R_X86_64_DTPOFF32" in relocations.split("'.rela.debug_info'")[1]
    debug = DebugInfo(tmp_path / "tls.o")
    try:
        assert "depth" in debug.variables and "enter" in debug.functions
    finally:
        debug.close()
