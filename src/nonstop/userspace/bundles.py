"""From a verified userspace bundle to what the engine applies."""

from __future__ import annotations

from nonstop.bundle import Bundle, UserspaceTarget
from nonstop.bundle.symbols import SymbolMap
from nonstop.userspace.engine import PatchSpec
from nonstop.userspace.errors import RefusedError


def spec_from_bundle(bundle: Bundle) -> PatchSpec:
    """The patch a verified BUNDLE carries (RefusedError when it is not a userspace bundle)."""
    manifest = bundle.manifest
    target = manifest.target
    if manifest.kind != "userspace" or not isinstance(target, UserspaceTarget):
        raise RefusedError(f"bundle is a {manifest.kind} bundle, not a userspace one")
    if target.arch != "x86_64":
        raise RefusedError(f"bundle targets {target.arch}; this engine patches x86_64")
    functions = []
    expected_code = {}
    for function in manifest.functions:
        if not function.replacement:
            raise RefusedError(f"function {function.target} has no replacement symbol")
        functions.append((function.target, function.replacement))
        if function.original_sha256:
            expected_code[function.target] = function.original_sha256
    symbol_map = None
    if manifest.payload_with_role("symbols") is not None:
        symbol_map = SymbolMap.from_json_bytes(bundle.payload("symbols"))
    return PatchSpec(
        build_id=target.build_id,
        soname=target.soname,
        level=manifest.level,
        object_bytes=bundle.payload("object"),
        functions=tuple(functions),
        symbol_map=symbol_map,
        expected_code=expected_code,
        info={
            "bundle_sha256": bundle.sha256,
            "key_id": bundle.key_id,
            "effective_version": manifest.effective_version,
            "cves": manifest.cves,
            "fixes": [{"title": fix.title, "cves": list(fix.cves)} for fix in manifest.fixes],
            "created": manifest.created,
        },
    )
