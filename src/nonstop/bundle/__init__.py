"""The signed patch bundle shared by every part: manifest schema, signing, verification.

A bundle is one file carrying a manifest, a detached Ed25519 signature over the
manifest's exact bytes, and payload files whose SHA-256 the manifest lists.
Nothing in a bundle is used before :func:`open_bundle` has verified it.

The names below are loaded from their modules on first use, so a command that
only needs, say, a target identity does not pay for importing cryptography.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nonstop.bundle.container import Bundle, describe_payload, open_bundle, pack
    from nonstop.bundle.errors import BundleError
    from nonstop.bundle.keys import SigningKey, TrustedKeys, generate_keypair, load_signing_key
    from nonstop.bundle.levels import LevelAction, decide_level
    from nonstop.bundle.manifest import (
        Fix,
        FunctionPatch,
        KernelTarget,
        Manifest,
        PackageInfo,
        PayloadFile,
        Update,
        UserspaceTarget,
    )

_MODULE_OF = {
    "Bundle": "container",
    "describe_payload": "container",
    "open_bundle": "container",
    "pack": "container",
    "BundleError": "errors",
    "SigningKey": "keys",
    "TrustedKeys": "keys",
    "generate_keypair": "keys",
    "load_signing_key": "keys",
    "LevelAction": "levels",
    "decide_level": "levels",
    "Fix": "manifest",
    "FunctionPatch": "manifest",
    "KernelTarget": "manifest",
    "Manifest": "manifest",
    "PackageInfo": "manifest",
    "PayloadFile": "manifest",
    "Update": "manifest",
    "UserspaceTarget": "manifest",
}
__all__ = [
    "Bundle",
    "BundleError",
    "Fix",
    "FunctionPatch",
    "KernelTarget",
    "LevelAction",
    "Manifest",
    "PackageInfo",
    "PayloadFile",
    "SigningKey",
    "TrustedKeys",
    "Update",
    "UserspaceTarget",
    "decide_level",
    "describe_payload",
    "generate_keypair",
    "load_signing_key",
    "open_bundle",
    "pack",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'nonstop.bundle' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nonstop.bundle.{module}"), name)
