"""Files mapped by unprivileged users are hostile: a copy of the target with the same build-id
and other symbols must not steer what root patches elsewhere (issue 11, item 2)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from .conftest import PARTIAL_LEVEL, FixtureBuild, nonstopctl
from .helpers import whole_text_matches_file
from .test_engine import patched

NOBODY = 65534
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not installed")


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory nobody owns and can reach (pytest's own tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="nonstop-nobody-"))
    path.chmod(0o755)
    os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path)


def point_symbol_elsewhere(library: Path, name: str, other: str) -> None:
    """Rewrite NAME's .dynsym entry (value and size) to OTHER's: plain byte writes."""
    with library.open("rb") as handle:
        dynsym = ELFFile(handle).get_section_by_name(".dynsym")
        assert isinstance(dynsym, SymbolTableSection)
        index = {sym.name: i for i, sym in enumerate(dynsym.iter_symbols())}
        target = dynsym.get_symbol(index[other])
        entry = dynsym["sh_offset"] + index[name] * dynsym["sh_entsize"]
    with library.open("r+b") as handle:
        handle.seek(entry + 8)
        handle.write(struct.pack("<QQ", target["st_value"], target["st_size"]))


def attacker_program(fixture_build: FixtureBuild, directory: Path) -> Path:
    """nsfix_prog and a same-build-id libnsfix whose nsfix_get names nsfix_kind, run as nobody."""
    for path in (fixture_build.program, fixture_build.library):
        shutil.copy2(path, directory / path.name)
        os.chown(directory / path.name, NOBODY, NOBODY)
    point_symbol_elsewhere(directory / fixture_build.library.name, "nsfix_get", "nsfix_kind")
    launcher = directory / "run-as-nobody"
    launcher.write_text(f'#!/bin/sh\nexec {" ".join(SETPRIV)} {directory / "nsfix_prog"} "$@"\n')
    launcher.chmod(0o755)
    return launcher


def test_same_build_id_copy_steers_no_other_process(
    start_target, fixture_build, bundles, agent_env, nobody_dir
):
    attacker = start_target(busy=1, sleepers=1, program=attacker_program(fixture_build, nobody_dir))
    victim = start_target(busy=1, sleepers=1)
    assert attacker.pid < victim.pid  # the attacker's process is patched first
    later_victim = None
    for run in (1, 2):  # the second run reads what the first left in the on-disk cache
        if run == 2:
            later_victim = start_target(busy=1, sleepers=1)
        done = nonstopctl(
            agent_env, "--lib-update", "--bundle", str(bundles[PARTIAL_LEVEL]), "--json"
        )
        by_pid = {p["pid"]: p for p in json.loads(done.stdout)["processes"]}
        assert by_pid[attacker.pid]["result"] == "refused", by_pid[attacker.pid]
        assert "symbol map" in by_pid[attacker.pid]["reason"]
        assert whole_text_matches_file(attacker.pid, nobody_dir / fixture_build.library.name)
        for process in (victim, later_victim) if later_victim else (victim,):
            assert by_pid[process.pid]["result"] in ("patched", "already"), by_pid[process.pid]
            # nsfix_get carries the fix; nsfix_kind (which the copy named) is untouched.
            assert process.behaviour() == patched(PARTIAL_LEVEL)
