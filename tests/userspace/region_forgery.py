"""Forged patch memory headers of many shapes, for hostile processes to map."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from nonstop.bundle.identity import userspace_target_of
from nonstop.userspace.region import MAGIC, memfd_name

FORGED_LEVEL = 9
"""Forged memfds are named after this level of libnsfix (one the tests never apply)."""


def header(body: bytes, state: int = 1, commit: int = 0, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return MAGIC + struct.pack("<QQII", state, commit, size, 0) + body


def plausible(build_id: str, **changes: Any) -> dict[str, Any]:
    """A document shaped like the engine's, for a region of 8192 bytes."""
    site = {"function": "nsfix_get", "entry": 0x1100, "patch_address": 0x1104, "size": 32,
            "original": "f30f1efa55", "replacement": "nsfix_get_fixed", "new": 1024,
            "stub": 256, "trampoline": 288, "slot": 320}  # fmt: skip
    document = {"level": 9, "build_id": build_id, "soname": "libnsfix.so.1",
                "target_path": "/usr/lib/libnsfix.so.1", "info": {}, "sites": [site],
                "code": [256, 2048]}  # fmt: skip
    document.update(changes)
    return document


def encoded(document: Any) -> bytes:
    return json.dumps(document).encode()


def forged_headers(build_id: str) -> dict[str, bytes]:
    site = plausible(build_id)["sites"][0]
    return {
        "a list": header(b"[]"),
        "an empty object": header(b"{}"),
        "a string": header(b'"nonstop"'),
        "a level of the wrong type": header(encoded(plausible(build_id, level="9"))),
        "a boolean level": header(encoded(plausible(build_id, level=True))),
        "a site that is no object": header(encoded(plausible(build_id, sites=[1]))),
        "a stub outside the region": header(
            encoded(plausible(build_id, sites=[{**site, "stub": 1 << 40}]))
        ),
        "fixes that are no objects": header(encoded(plausible(build_id, info={"fixes": [1]}))),
        "an unknown key": header(encoded({**plausible(build_id), "extra": 1})),
        "a control character in the soname": header(
            encoded(plausible(build_id, soname="lib\x1b[2Jx"))
        ),
        "deep nesting": header(b"[" * 50_000 + b"]" * 50_000),
        "a length beyond the region": header(encoded(plausible(build_id)), length=1 << 31),
        "no UTF-8": header(b"\xff\xfe{"),
        "an unknown state": header(encoded(plausible(build_id)), state=99),
        "a commit flag of 7": header(encoded(plausible(build_id)), commit=7),
        "a cut magic": b"NSTPHD",
    }


def library_build_id(library: Path) -> str:
    return userspace_target_of(library, with_package=False).build_id


def forger_line(library: Path, headers: list[bytes]) -> str:
    """The FORGER's stdin: one memfd named like LIBRARY's patch memory per header."""
    name = memfd_name(library_build_id(library), FORGED_LEVEL)
    return json.dumps([[name, blob.hex()] for blob in headers])
