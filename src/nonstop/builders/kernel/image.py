"""Identity of a kernel image file: the GNU build-id inside a compressed ``vmlinuz``.

A bzImage carries the real kernel (an ELF ``vmlinux``) compressed after its
setup code; the build-id note there is what ``/sys/kernel/notes`` shows once
that kernel runs, so a bundle built against the image names exactly it.
"""

from __future__ import annotations

import gzip
import io
import lzma
import zlib
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from nonstop.builders.errors import BuilderError
from nonstop.bundle.identity import parse_build_id_notes

XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b\x08\x00"


class KernelImageError(BuilderError):
    """The kernel image cannot be decompressed or carries no build-id."""


def decompress_vmlinux(bzimage: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage compressed with xz or gzip."""
    start = bzimage.find(XZ_MAGIC)
    if start >= 0:
        try:
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
        except lzma.LZMAError as exc:
            raise KernelImageError(f"corrupt xz payload in kernel image: {exc}") from None
    start = bzimage.find(GZIP_MAGIC)
    if start >= 0:
        try:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bzimage[start:])
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise KernelImageError(f"corrupt gzip payload in kernel image: {exc}") from None
    raise KernelImageError("kernel image is neither xz- nor gzip-compressed (unsupported)")


def vmlinuz_build_id(path: Path) -> str:
    """The GNU build-id of the kernel in the image file PATH."""
    vmlinux = decompress_vmlinux(path.read_bytes())
    try:
        notes = ELFFile(io.BytesIO(vmlinux)).get_section_by_name(".notes")
        build_id = parse_build_id_notes(notes.data()) if notes is not None else None
    except ELFError as exc:
        raise KernelImageError(f"{path}: decompressed kernel is not ELF: {exc}") from None
    if not build_id:
        raise KernelImageError(f"{path}: the kernel has no GNU build-id note")
    return build_id
