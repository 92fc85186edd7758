"""What a well-formed patch memory header document is: checked field by field before use.

The header lives in the target's memory, so any process can show a memfd named
like nonstop's with whatever JSON it likes. A document that is not exactly what
this engine writes (types, sizes, offsets inside the region) makes the region
*foreign*: it is reported as such and never trusted for a decision.
"""

from __future__ import annotations

import re
from typing import Any

from nonstop.userspace.dispatch import SLOT_SIZE, STUB_SIZE

MAX_JSON = 1 << 20
"""Bytes of header JSON read at most: far above what 4096 sites need."""
MAX_SITES = 4096
MAX_LEVEL = 1_000_000
ADDRESS_LIMIT = 1 << 64
_KEYS = {"level", "build_id", "soname", "target_path", "info", "sites", "code"}
_SITE_KEYS = {
    "function",
    "entry",
    "patch_address",
    "size",
    "original",
    "replacement",
    "new",
    "stub",
    "trampoline",
    "slot",
}
_BUILD_ID = re.compile(r"[0-9a-f]{16,128}")
_SYMBOL = re.compile(r"[A-Za-z0-9_.$@]{1,1024}")
_HEX = re.compile(r"(?:[0-9a-f]{2}){1,32}")
_CVE = re.compile(r"CVE-[0-9]{4}-[0-9]{4,16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _int(value: Any, low: int, high: int) -> bool:
    """An integer (not a bool) with LOW <= value < HIGH."""
    return type(value) is int and low <= value < high


def _text(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and not _CONTROL.search(value)


def _symbol(value: Any) -> bool:
    return isinstance(value, str) and bool(_SYMBOL.fullmatch(value))


def _texts(value: Any, limit: int, pattern: re.Pattern[str]) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= limit
        and all(isinstance(v, str) and bool(pattern.fullmatch(v)) for v in value)
    )


def _info(info: Any) -> bool:
    """The bundle facts shown by --lib-patch-info (spec.info; empty without a bundle)."""
    if not isinstance(info, dict):
        return False
    for key, value in info.items():
        if key in ("bundle_sha256", "key_id", "effective_version", "created"):
            if value is not None and not _text(value, 256):
                return False
        elif key == "cves":
            if not _texts(value, 10_000, _CVE):
                return False
        elif key == "fixes":
            if not isinstance(value, list) or len(value) > 10_000:
                return False
            for fix in value:
                if not (isinstance(fix, dict) and set(fix) == {"title", "cves"}):
                    return False
                if not (_text(fix["title"], 256) and _texts(fix["cves"], 256, _CVE)):
                    return False
        else:
            return False
    return True


def _site(site: Any, size: int) -> bool:
    if not (isinstance(site, dict) and set(site) == _SITE_KEYS):
        return False
    replacement = site["replacement"]
    return (
        _symbol(site["function"])
        and (replacement is None or _symbol(replacement))
        and _int(site["entry"], 0, ADDRESS_LIMIT)
        and _int(site["patch_address"], 0, ADDRESS_LIMIT)
        and _int(site["size"], 0, 1 << 32)
        and isinstance(site["original"], str)
        and bool(_HEX.fullmatch(site["original"]))
        and _int(site["new"], 0, size)
        and _int(site["stub"], 0, size - STUB_SIZE + 1)
        and _int(site["trampoline"], 0, size)
        and _int(site["slot"], 0, size - SLOT_SIZE + 1)
    )


def well_formed(document: Any, size: int) -> bool:
    """True when DOCUMENT is a header this engine writes, for a region of SIZE bytes."""
    if not (isinstance(document, dict) and set(document) == _KEYS):
        return False
    code, sites = document["code"], document["sites"]
    return (
        _int(document["level"], 0, MAX_LEVEL + 1)
        and isinstance(document["build_id"], str)
        and bool(_BUILD_ID.fullmatch(document["build_id"]))
        and _text(document["soname"], 256)
        and isinstance(document["target_path"], str)
        and len(document["target_path"]) <= 8192
        and _info(document["info"])
        and isinstance(code, list)
        and len(code) == 2
        and _int(code[0], 0, size + 1)
        and _int(code[1], 0, size + 1)
        and isinstance(sites, list)
        and 0 < len(sites) <= MAX_SITES
        and all(_site(site, size) for site in sites)
    )
