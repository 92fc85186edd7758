"""A kernel module file's ``.modinfo`` section: the key=value strings modinfo(8) prints.

nonstop's builder stamps its own keys there (``nonstop_level``, ``nonstop_target``,
...), so a module says which level it is even outside its bundle.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from nonstop.kernel.errors import KernelError


class ModinfoError(KernelError):
    """The file is not a kernel module with a readable .modinfo section."""


@dataclass(frozen=True)
class ModuleInfo:
    """The key=value entries of a .modinfo section, in file order; keys may repeat."""

    entries: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        """The first value of KEY (modinfo keys such as ``alias`` may repeat)."""
        return next((value for name, value in self.entries if name == key), None)

    @property
    def name(self) -> str | None:
        """The name the kernel registers the module (and its livepatch sysfs directory) under."""
        return self.get("name")

    @property
    def release(self) -> str | None:
        """The kernel release the module was built for (first word of vermagic)."""
        vermagic = self.get("vermagic")
        return vermagic.split()[0] if vermagic else None

    @property
    def is_livepatch(self) -> bool:
        """True if the module declares ``livepatch=Y``: the kernel enables no patch from others."""
        return self.get("livepatch") == "Y"


def read_modinfo(image: bytes) -> ModuleInfo:
    """Parse the .modinfo section of the module IMAGE (bytes of a .ko file)."""
    from elftools.common.exceptions import ELFError  # only commands that load a module need it
    from elftools.elf.elffile import ELFFile

    try:
        section = ELFFile(io.BytesIO(image)).get_section_by_name(".modinfo")
        data = section.data() if section is not None else None
    except (ELFError, ValueError, OSError) as exc:
        raise ModinfoError(f"not a kernel module (ELF): {exc}") from None
    if data is None:
        raise ModinfoError("not a kernel module: no .modinfo section")
    entries = []
    for raw in data.split(b"\0"):
        key, sep, value = raw.decode("utf-8", "replace").partition("=")
        if sep and key:
            entries.append((key, value))
    return ModuleInfo(tuple(entries))
