"""The signed patch bundle shared by every part: manifest schema, signing, verification.

A bundle is one file carrying a manifest, a detached Ed25519 signature over the
manifest's exact bytes, and payload files whose SHA-256 the manifest lists.
Nothing in a bundle is used before :func:`open_bundle` has verified it.
"""

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
    UserspaceTarget,
)

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
    "UserspaceTarget",
    "decide_level",
    "describe_payload",
    "generate_keypair",
    "load_signing_key",
    "open_bundle",
    "pack",
]
