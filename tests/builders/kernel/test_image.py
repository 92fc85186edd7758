"""Reading a kernel image's build-id (host only)."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

from nonstop.builders.kernel.image import KernelImageError, decompress_vmlinux, vmlinuz_build_id

SETUP = b"MZ" + b"\0" * 510  # stands in for the bzImage setup code before the payload


PAYLOAD = b"\x7fELF" + bytes(range(256)) * 4


@pytest.mark.parametrize(
    "packed", [lzma.compress(PAYLOAD), gzip.compress(PAYLOAD)], ids=["xz", "gzip"]
)
def test_payload_after_setup_code_is_found(packed: bytes) -> None:
    assert decompress_vmlinux(SETUP + packed + b"trailing setup data") == PAYLOAD


def test_unsupported_or_corrupt_images(tmp_path: Path) -> None:
    with pytest.raises(KernelImageError, match="neither xz- nor gzip"):
        decompress_vmlinux(SETUP + b"zstd payload")
    with pytest.raises(KernelImageError, match="corrupt xz"):
        decompress_vmlinux(SETUP + b"\xfd7zXZ\x00" + b"garbage" * 10)
    image = tmp_path / "vmlinuz"
    image.write_bytes(SETUP + lzma.compress(b"not an ELF file at all" * 10))
    with pytest.raises(KernelImageError, match="not ELF"):
        vmlinuz_build_id(image)
