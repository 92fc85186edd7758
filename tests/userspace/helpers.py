"""Observing a target from outside: its maps, its memory, its patch regions."""

from __future__ import annotations

import re
from pathlib import Path

from nonstop.bundle import TrustedKeys, open_bundle
from nonstop.userspace import PatchSpec
from nonstop.userspace.bundles import spec_from_bundle
from nonstop.userspace.elfmodel import ModelCache
from nonstop.userspace.image import ProcessImage
from nonstop.userspace.memory import ProcessMemory
from nonstop.userspace.region import Region, find_regions, leaked_memfds


def spec_for(bundle: Path, trusted: TrustedKeys) -> PatchSpec:
    return spec_from_bundle(open_bundle(bundle, trusted))


def maps_lines(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/maps").read_text().splitlines()


def nonstop_lines(pid: int) -> list[str]:
    return [line for line in maps_lines(pid) if "/memfd:nonstop:" in line]


def private_dirty_kb(pid: int) -> int:
    """Private_Dirty of the whole process, in kB."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    match = re.search(r"^Private_Dirty:\s+(\d+) kB", text, re.M)
    assert match is not None
    return int(match.group(1))


def regions(pid: int) -> list[Region]:
    with ProcessMemory(pid) as memory:
        return find_regions(pid, memory)


def function_bytes(
    pid: int, library: Path, names: tuple[str, ...]
) -> dict[str, tuple[bytes, bytes]]:
    """For each function NAME of LIBRARY mapped in PID: (bytes in memory, bytes in the file)."""
    image = ProcessImage(pid, ModelCache())
    with library.open("rb") as handle:
        from nonstop.userspace.elfmodel import read_build_id

        build_id = read_build_id(handle)
    (module,) = [m for m in image.modules if m.build_id == build_id]
    found = {}
    with ProcessMemory(pid) as memory:
        for name in names:
            (symbol,) = [d for d in module.model.defined(name) if not d.hidden]
            in_memory = memory.read(module.base + symbol.value, symbol.size)
            in_file = module.read_file(symbol.value, symbol.size)
            found[name] = (in_memory, in_file)
    return found


def whole_text_matches_file(pid: int, library: Path) -> bool:
    """Every executable byte of LIBRARY in PID equals the file (no jump, no gadget left)."""
    image = ProcessImage(pid, ModelCache())
    with library.open("rb") as handle:
        from nonstop.userspace.elfmodel import read_build_id

        build_id = read_build_id(handle)
    (module,) = [m for m in image.modules if m.build_id == build_id]
    with ProcessMemory(pid) as memory:
        for mapping in module.mappings:
            if not mapping.executable:
                continue
            live = memory.read(mapping.start, mapping.end - mapping.start)
            with open(module.file, "rb") as handle:
                handle.seek(mapping.offset)
                on_disk = handle.read(mapping.end - mapping.start)
            if live[: len(on_disk)] != on_disk:
                return False
    return True


def entries_into(pid: int, region: Region) -> int:
    """How many entry sites of REGION jump into it (to its dispatch stubs) right now."""
    with ProcessMemory(pid) as memory:
        return sum(
            memory.read(site.patch_address, len(site.original)) == region.jump_for(site)
            for site in region.sites
        )


def clean(pid: int) -> bool:
    """No half-done state: at most one region, it is ACTIVE, no leaked memfd."""
    found = regions(pid)
    return (
        len(found) <= 1 and all(r.state.name == "ACTIVE" for r in found) and not leaked_memfds(pid)
    )
