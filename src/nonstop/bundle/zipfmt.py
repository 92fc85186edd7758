"""The canonical ZIP subset bundles are written in, and its strict reader.

Bundles are ordinary ZIP files (``unzip -l`` lists them) restricted to one
canonical form: stored (uncompressed) members, fixed timestamps and
attributes, no extra fields or comments, members contiguous from offset 0 and
the central directory right after them. Every byte of a bundle is therefore
either pinned by this module, derived from other bytes (CRCs, sizes,
offsets) and cross-checked, or covered by the signature. A reader that
accepts only this form can never be fooled by container tricks, and never
decompresses anything, so decompression bombs cannot exist.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from nonstop.bundle.errors import (
    DecompressionBombError,
    MalformedBundleError,
    UnsafeMemberNameError,
)

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_LOCAL_SIG = 0x04034B50
_CENTRAL_SIG = 0x02014B50
_END_SIG = 0x06054B50
_VERSION_NEEDED = 20
_VERSION_MADE_BY = (3 << 8) | 20  # Unix, ZIP 2.0
_DOS_TIME = 0
_DOS_DATE = (1 << 5) | 1  # 1980-01-01
_FILE_ATTRIBUTES = (0o100644) << 16  # regular file, rw-r--r--
_STORED = 0
_MAX_NAME = 128


def write_members(members: Sequence[tuple[str, bytes]]) -> bytes:
    """Members, in the order given, as canonical ZIP bytes."""
    body = bytearray()
    central = bytearray()
    for name, data in members:
        encoded = name.encode("ascii")
        crc = zlib.crc32(data)
        offset = len(body)
        body += _LOCAL.pack(
            _LOCAL_SIG,
            _VERSION_NEEDED,
            0,
            _STORED,
            _DOS_TIME,
            _DOS_DATE,
            crc,
            len(data),
            len(data),
            len(encoded),
            0,
        )
        body += encoded + data
        central += _CENTRAL.pack(
            _CENTRAL_SIG,
            _VERSION_MADE_BY,
            _VERSION_NEEDED,
            0,
            _STORED,
            _DOS_TIME,
            _DOS_DATE,
            crc,
            len(data),
            len(data),
            len(encoded),
            0,
            0,
            0,
            0,
            _FILE_ATTRIBUTES,
            offset,
        )
        central += encoded
    end = _END.pack(_END_SIG, 0, 0, len(members), len(members), len(central), len(body), 0)
    return bytes(body + central + end)


def _check_name(raw: bytes) -> str:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise UnsafeMemberNameError(f"member name {raw[:64]!r} is not plain ASCII") from None
    if "/" in name or "\\" in name:
        raise UnsafeMemberNameError(f"member name {name!r} has path components")
    if not name or name in (".", "..") or len(name) > _MAX_NAME:
        raise UnsafeMemberNameError(f"member name {name!r} is not a plain file name")
    if not all(ch.isalnum() or ch in "_.+-" for ch in name) or name[0] in ".+-":
        raise UnsafeMemberNameError(f"member name {name!r} is not a plain file name")
    return name


def read_members(data: bytes, max_members: int) -> list[tuple[str, memoryview]]:
    """The members of canonical ZIP bytes, in file order; raise on any deviation.

    Sizes from headers are only ever compared against the bytes actually
    present; nothing is allocated from them.
    """
    view = memoryview(data)
    if len(data) < _END.size:
        raise MalformedBundleError("not a bundle: too short to be a ZIP container")
    (sig, disk, cd_disk, on_disk, total, cd_size, cd_offset, comment_len) = _END.unpack_from(
        data, len(data) - _END.size
    )
    if sig != _END_SIG or comment_len != 0:
        raise MalformedBundleError("not a bundle: no canonical ZIP end record at the end")
    if disk or cd_disk or on_disk != total:
        raise MalformedBundleError("not a bundle: multi-disk ZIP containers are not allowed")
    if total > max_members:
        raise MalformedBundleError(f"bundle has {total} members, at most {max_members}")
    if cd_offset + cd_size != len(data) - _END.size:
        raise MalformedBundleError("central directory is not where the end record says")

    members: list[tuple[str, memoryview]] = []
    position = cd_offset
    body_end = 0
    for _ in range(total):
        if position + _CENTRAL.size > cd_offset + cd_size:
            raise MalformedBundleError("central directory is truncated")
        fields = _CENTRAL.unpack_from(data, position)
        (
            c_sig,
            made_by,
            needed,
            flags,
            method,
            mtime,
            mdate,
            crc,
            csize,
            usize,
            name_len,
            extra_len,
            comment,
            disk_start,
            internal,
            external,
            offset,
        ) = fields
        raw_name = bytes(view[position + _CENTRAL.size : position + _CENTRAL.size + name_len])
        position += _CENTRAL.size + name_len
        if c_sig != _CENTRAL_SIG or len(raw_name) != name_len:
            raise MalformedBundleError("central directory entry is corrupt")
        name = _check_name(raw_name)
        if method != _STORED:
            raise DecompressionBombError(
                f"member {name} is compressed (method {method}); bundle members are stored "
                "uncompressed and nothing is ever inflated"
            )
        pinned = (
            made_by,
            needed,
            flags,
            mtime,
            mdate,
            extra_len,
            comment,
            disk_start,
            internal,
            external,
        )
        expected = (
            _VERSION_MADE_BY,
            _VERSION_NEEDED,
            0,
            _DOS_TIME,
            _DOS_DATE,
            0,
            0,
            0,
            0,
            _FILE_ATTRIBUTES,
        )
        if pinned != expected or csize != usize:
            raise MalformedBundleError(f"member {name} has non-canonical ZIP header fields")
        if offset != body_end:
            raise MalformedBundleError(f"member {name} is not where the previous one ends")
        content = _read_local(data, view, offset, name, raw_name, crc, usize, cd_offset)
        body_end = offset + _LOCAL.size + name_len + usize
        members.append((name, content))
    if position != cd_offset + cd_size or body_end != cd_offset:
        raise MalformedBundleError("bundle has bytes outside its members")
    return members


def _read_local(
    data: bytes,
    view: memoryview,
    offset: int,
    name: str,
    raw_name: bytes,
    crc: int,
    size: int,
    limit: int,
) -> memoryview:
    if offset + _LOCAL.size > limit:
        raise MalformedBundleError(f"member {name} lies outside the bundle")
    local = _LOCAL.unpack_from(data, offset)
    expected = (
        _LOCAL_SIG,
        _VERSION_NEEDED,
        0,
        _STORED,
        _DOS_TIME,
        _DOS_DATE,
        crc,
        size,
        size,
        len(raw_name),
        0,
    )
    if local != expected:
        raise MalformedBundleError(f"local header of {name} disagrees with the central directory")
    start = offset + _LOCAL.size
    if bytes(view[start : start + len(raw_name)]) != raw_name:
        raise MalformedBundleError(f"local header of {name} names another member")
    start += len(raw_name)
    if start + size > limit:
        raise MalformedBundleError(f"member {name} is truncated")
    content = view[start : start + size]
    if zlib.crc32(content) != crc:
        raise MalformedBundleError(f"member {name} fails its CRC check")
    return content
