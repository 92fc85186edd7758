"""Every way a bundle can be refused, one exception type per cause.

Callers catch :class:`BundleError` to refuse a bundle; tests and tools match
the subclass to learn why. ``str(exc)`` is always a single line naming the cause.
"""

from __future__ import annotations


class BundleError(Exception):
    """A bundle was refused. The message is one line naming the cause."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class MalformedBundleError(BundleError):
    """The file is not a readable bundle container at all."""


class BundleTooLargeError(BundleError):
    """The bundle file is larger than any bundle may be."""


class UnsafeMemberNameError(BundleError):
    """A member name has path components, is absolute, or is not a plain file name."""


class DuplicateMemberError(BundleError):
    """Two members share one name."""


class MissingMemberError(BundleError):
    """The manifest, the signature or a payload file named by the manifest is absent."""


class UnexpectedMemberError(BundleError):
    """The container holds a member that the signed manifest does not list."""


class OversizedMemberError(BundleError):
    """A member is larger than its limit (or than the size the manifest declares)."""


class DecompressionBombError(OversizedMemberError):
    """A member is compressed: bundle members are stored, and nothing is ever inflated."""


class UnknownKeyError(BundleError):
    """The bundle is signed by a key that is not among the trusted keys."""


class BadSignatureError(BundleError):
    """The signature does not verify over the manifest bytes."""


class UnsupportedFormatVersionError(BundleError):
    """The manifest declares a format version this reader does not know."""


class ManifestSchemaError(BundleError):
    """The manifest is not valid JSON or violates the manifest schema."""


class DigestMismatchError(BundleError):
    """A payload file's SHA-256 differs from the one in the signed manifest."""


class SymbolMapError(BundleError):
    """A symbol map payload is invalid, or a file's symbols cannot be read."""


class KeyFileError(BundleError):
    """A key file is missing, unreadable or not an Ed25519 key."""


class LevelPolicyError(BundleError):
    """A bundle's level may not replace the level that is applied."""
