"""Target identity of library files and of the running kernel."""

from __future__ import annotations

import hashlib
import platform
import struct
import subprocess
from pathlib import Path

import pytest

from nonstop.bundle.identity import (
    IdentityError,
    parse_build_id_notes,
    read_os_release,
    running_kernel_target,
    userspace_target_of,
)


def note(name: bytes, note_type: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), note_type) + pad(name) + pad(desc)


def test_build_id_from_raw_notes_skips_other_notes():
    blob = (
        note(b"Xen\0", 3, b"\x01\x02") + note(b"GNU\0", 1, b"abcd") + note(b"GNU\0", 3, b"\xbe\xef")
    )
    assert parse_build_id_notes(blob) == "beef"
    assert parse_build_id_notes(b"\x01\x00") is None


def readelf_build_id(path: Path) -> str:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True, check=True)
    return next(line.split()[-1] for line in out.stdout.splitlines() if "Build ID" in line)


def test_library_identity_matches_readelf(tmp_path):
    source = tmp_path / "lib.c"
    source.write_text("int answer(void) { return 42; }\n")
    lib = tmp_path / "libanswer.so.3"
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-Wl,--build-id",
            "-Wl,-soname,libanswer.so.3",
            "-o",
            str(lib),
            str(source),
        ],
        check=True,
    )
    target = userspace_target_of(lib)
    assert target.build_id == readelf_build_id(lib)
    assert target.soname == "libanswer.so.3"
    assert target.package is None  # no package manager owns a temp file


def test_distro_library_reports_its_package():
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    target = userspace_target_of(libc)
    assert target.soname == "libc.so.6"
    assert target.build_id == readelf_build_id(libc)
    assert target.package is not None and target.package.name == "libc6"
    assert target.package.distro == "debian 12"


def test_library_without_build_id_is_refused(tmp_path):
    source = tmp_path / "lib.c"
    source.write_text("int f(void) { return 1; }\n")
    lib = tmp_path / "libnoid.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,--build-id=none", "-o", str(lib), str(source)], check=True
    )
    with pytest.raises(IdentityError, match="no GNU build-id"):
        userspace_target_of(lib)


def test_non_elf_and_missing_files(tmp_path):
    text = tmp_path / "notelf"
    text.write_text("hello")
    with pytest.raises(IdentityError, match="cannot read ELF"):
        userspace_target_of(text)
    with pytest.raises(IdentityError, match="not found"):
        userspace_target_of(tmp_path / "absent.so")


def test_running_kernel_identity():
    kernel = running_kernel_target()
    assert kernel.release == platform.release()
    assert kernel.version_digest == hashlib.sha256(Path("/proc/version").read_bytes()).hexdigest()


def test_os_release_parsing(tmp_path):
    path = tmp_path / "os-release"
    path.write_text("# comment\nID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME='Debian 12'\n")
    assert read_os_release(path) == {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian 12"}
