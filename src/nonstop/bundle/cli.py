"""`nonstop keys ...` and `nonstop bundle create|inspect|verify`."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

from nonstop import __version__
from nonstop.bundle.container import (
    describe_payload,
    open_bundle,
    pack,
    read_bundle_bytes,
    read_unverified_manifest,
)
from nonstop.bundle.errors import BundleError
from nonstop.bundle.identity import IdentityError, userspace_target_of
from nonstop.bundle.keys import PRIVATE_KEY_NAME, TrustedKeys, generate_keypair, load_signing_key
from nonstop.bundle.manifest import (
    Fix,
    FunctionPatch,
    KernelTarget,
    Manifest,
    PayloadRole,
    Target,
)
from nonstop.bundle.symbols import SymbolMap, replacement_refusal, target_functions
from nonstop.console import emit_json, stdout

BUILDER = f"nonstop {__version__}"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` and ``bundle`` command groups to the ``nonstop`` parser."""
    keys = commands.add_parser("keys", help="manage signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    generate = keys_sub.add_parser("generate", help="create an Ed25519 signing key pair")
    generate.add_argument("--out", type=Path, required=True, metavar="DIR")
    generate.set_defaults(handler=cmd_keys_generate)

    bundle = commands.add_parser("bundle", help="create, inspect and verify patch bundles")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="COMMAND")
    _add_create_parser(bundle_sub)

    inspect = bundle_sub.add_parser("inspect", help="show a bundle's manifest")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--keys", type=Path, metavar="DIR", help="also verify against DIR")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=cmd_inspect)

    verify = bundle_sub.add_parser("verify", help="exit 0 only if valid and signed by a key in DIR")
    verify.add_argument("file", type=Path)
    verify.add_argument("--keys", type=Path, metavar="DIR", required=True)
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=cmd_verify)


def _add_create_parser(bundle_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    create = bundle_sub.add_parser("create", help="sign a hand-made payload into a bundle")
    create.add_argument("--kind", choices=["userspace", "kernel"], required=True)
    create.add_argument("--level", type=int, required=True)
    create.add_argument("--key", type=Path, required=True, help="signing.key (or its directory)")
    create.add_argument("-o", "--output", type=Path, required=True)
    create.add_argument("--cve", action="append", default=[], metavar="CVE-ID")
    create.add_argument("--title", help="title of the fix (default: derived from the CVEs)")
    create.add_argument("--reference", action="append", default=[], metavar="URL")
    create.add_argument("--effective-version", metavar="TEXT")
    create.add_argument("--description")
    user = create.add_argument_group("userspace payload")
    user.add_argument("--target", type=Path, metavar="LIB.so", help="the exact library to patch")
    user.add_argument("--object", type=Path, metavar="PATCH.o", help="relocatable patch object")
    user.add_argument("--replace", action="append", default=[], metavar="OLD=NEW")
    user.add_argument("--symbols", type=Path, metavar="FILE", help="symbol map of the target")
    kern = create.add_argument_group("kernel payload")
    kern.add_argument("--module", type=Path, metavar="FILE.ko", help="livepatch module")
    kern.add_argument("--kernel-release", metavar="RELEASE")
    kern.add_argument("--kernel-build-id", metavar="HEX")
    kern.add_argument("--kernel-version-digest", metavar="SHA256")
    kern.add_argument(
        "--function",
        action="append",
        default=[],
        metavar="NAME[@OBJECT]",
        help="kernel function the module replaces (OBJECT defaults to vmlinux)",
    )
    create.set_defaults(handler=cmd_create)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Write a new key pair into --out (never over an existing key) and print its key id."""
    key = generate_keypair(args.out)
    stdout.print(f"key id {key.key_id}", markup=False)
    stdout.print(f"private key: {args.out / PRIVATE_KEY_NAME} (mode 0600, keep it offline)")
    stdout.print(f"public key:  {args.out / 'signing.pub'} (install on hosts and servers)")
    return 0


def _read_input(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {what} {path}: {exc.strerror}") from None


def _userspace_parts(
    args: argparse.Namespace,
) -> tuple[Target, list[FunctionPatch], dict[str, tuple[PayloadRole, bytes]]]:
    if not args.target or not args.object or not args.replace:
        raise BundleError("--kind userspace needs --target, --object and at least one --replace")
    try:
        target = userspace_target_of(args.target)
    except IdentityError as exc:
        raise BundleError(str(exc)) from None
    replaces = []
    for spec in args.replace:
        old, sep, new = spec.partition("=")
        if not sep or not old or not new:
            raise BundleError(f"--replace wants OLD_SYMBOL=NEW_SYMBOL, got {spec!r}")
        replaces.append((old, new))
    files: dict[str, tuple[PayloadRole, bytes]] = {
        "patch.o": ("object", _read_input(args.object, "patch object")),
    }
    symbol_map = None
    if args.symbols:
        files["symbols.json"] = ("symbols", _read_input(args.symbols, "symbol map"))
        symbol_map = SymbolMap.from_json_bytes(files["symbols.json"][1])
    # The target is at hand: refuse what the engine would, and record each function's code.
    found = target_functions(args.target, [old for old, _ in replaces], symbol_map)
    functions = []
    for old, new in replaces:
        known = found.get(old)
        reason = replacement_refusal(old, known.type) if known else None
        if reason:
            raise BundleError(reason)
        code = known.code_sha256 if known else None
        functions.append(FunctionPatch(target=old, replacement=new, original_sha256=code))
    return target, functions, files


def _kernel_parts(
    args: argparse.Namespace,
) -> tuple[Target, list[FunctionPatch], dict[str, tuple[PayloadRole, bytes]]]:
    if not args.module or not args.kernel_release or not args.function:
        raise BundleError("--kind kernel needs --module, --kernel-release and --function")
    if not (args.kernel_build_id or args.kernel_version_digest):
        raise BundleError("--kind kernel needs --kernel-build-id or --kernel-version-digest")
    target = KernelTarget(
        release=args.kernel_release,
        build_id=args.kernel_build_id,
        version_digest=args.kernel_version_digest,
    )
    functions = []
    for spec in args.function:
        name, _, obj = spec.partition("@")
        functions.append(FunctionPatch(target=name, object=obj or "vmlinux"))
    module = _read_input(args.module, "kernel module")
    return target, functions, {args.module.name: ("module", module)}


def cmd_create(args: argparse.Namespace) -> int:
    """Sign the given payload into --output (replaced if it exists). For userspace, a function
    the engine would refuse is refused here, and each function's original code is recorded
    by SHA-256 when the target file has it."""
    key_path = args.key / PRIVATE_KEY_NAME if args.key.is_dir() else args.key
    key = load_signing_key(key_path)
    parts = _userspace_parts(args) if args.kind == "userspace" else _kernel_parts(args)
    target, functions, files = parts
    fixes: tuple[Fix, ...] = ()
    if args.cve or args.title:
        title = args.title or "fix for " + ", ".join(args.cve)
        fixes = (Fix(title=title, cves=tuple(args.cve), references=tuple(args.reference)),)
    manifest = Manifest(
        kind=args.kind,
        target=target,
        level=args.level,
        functions=tuple(functions),
        payload=tuple(describe_payload(name, role, data) for name, (role, data) in files.items()),
        effective_version=args.effective_version or _default_effective_version(target, args.level),
        builder=BUILDER,
        fixes=fixes,
        description=args.description,
    )
    data = pack(manifest, {name: content for name, (_, content) in files.items()}, key)
    try:
        args.output.write_bytes(data)
    except OSError as exc:
        raise BundleError(f"cannot write {args.output}: {exc.strerror}") from None
    stdout.print(
        f"wrote {args.output}: {args.kind} level {args.level} for {target.describe()}, "
        f"signed with key {key.key_id}",
        markup=False,
    )
    return 0


def _default_effective_version(target: Target, level: int) -> str:
    if isinstance(target, KernelTarget):
        return f"{target.release}+nonstop{level}"
    base = target.package.version if target.package else target.soname
    return f"{base}+nonstop{level}"


def _summary(manifest: Manifest, key_id: str, verified: bool, sha256: str) -> dict[str, Any]:
    return {
        "sha256": sha256,
        "key_id": key_id,
        "verified": verified,
        "manifest": manifest.to_dict(),
    }


def _print_manifest(manifest: Manifest, key_id: str, verified: bool) -> None:
    state = "verified" if verified else "NOT verified (pass --keys DIR to verify)"
    stdout.print(f"{manifest.kind} bundle, level {manifest.level}", markup=False)
    stdout.print(f"  target:            {manifest.target.describe()}", markup=False)
    stdout.print(f"  effective version: {manifest.effective_version}", markup=False)
    stdout.print(f"  signed by key:     {key_id} ({state})", markup=False)
    stdout.print(f"  created:           {manifest.created} by {manifest.builder}", markup=False)
    stdout.print(f"  CVEs:              {', '.join(manifest.cves) or '-'}", markup=False)
    for fix in manifest.fixes:
        stdout.print(f"  fix: {fix.title} [{', '.join(fix.cves)}]", markup=False)
    for function in manifest.functions:
        arrow = f" -> {function.replacement}" if function.replacement else ""
        where = f" in {function.object}" if function.object else ""
        stdout.print(f"  replaces: {function.target}{where}{arrow}", markup=False)
    for entry in manifest.payload:
        stdout.print(f"  payload: {entry.name} ({entry.role}, {entry.size} bytes)", markup=False)


def cmd_inspect(args: argparse.Namespace) -> int:
    """Show the manifest. Without --keys nothing is verified: the signer shown is only the one
    the bundle claims."""
    data = read_bundle_bytes(args.file)
    if args.keys:
        bundle = open_bundle(data, TrustedKeys.from_dir(args.keys))
        manifest, key_id, verified, digest = bundle.manifest, bundle.key_id, True, bundle.sha256
    else:
        manifest, key_id = read_unverified_manifest(data)
        verified, digest = False, hashlib.sha256(data).hexdigest()
    if args.json:
        emit_json(_summary(manifest, key_id, verified, digest))
    else:
        _print_manifest(manifest, key_id, verified)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """0 when the bundle verifies against a key in --keys; otherwise its BundleError."""
    trusted = TrustedKeys.from_dir(args.keys)
    bundle = open_bundle(read_bundle_bytes(args.file), trusted)
    if args.json:
        emit_json(_summary(bundle.manifest, bundle.key_id, True, bundle.sha256))
    else:
        stdout.print(
            f"OK: {args.file} is a valid {bundle.manifest.kind} bundle, level "
            f"{bundle.manifest.level}, signed by trusted key {bundle.key_id}",
            markup=False,
        )
    return 0
