"""`nonstop build kernel RECIPE.toml --key KEY -o OUTDIR`: one signed bundle per level.

Pipeline: read the recipe; fetch the exact target kernel's Debian packages
into the cache; compile the livepatch module against its headers with the
level stamped into ``.modinfo``; check the built module; sign a manifest that
names the kernel by release and build-id (read from the kernel image itself)
and carries the module plus its sources (for audit).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from nonstop import __version__
from nonstop.builders.cache import cache_dir
from nonstop.builders.errors import BuilderError
from nonstop.builders.kernel.module import compile_module
from nonstop.builders.kernel.packages import (
    KernelTree,
    fetch_kernel,
)
from nonstop.builders.kernel.recipe import KernelRecipe, load_recipe
from nonstop.bundle import Manifest, SigningKey, describe_payload, load_signing_key, pack
from nonstop.bundle.keys import PRIVATE_KEY_NAME
from nonstop.console import fail, stdout
from nonstop.kernel.modinfo import ModinfoError, read_modinfo

BUILDER = f"nonstop build kernel {__version__}"


class KernelBuildError(BuilderError):
    """The build cannot go on; the message names the cause in one line."""


@dataclass(frozen=True)
class BuiltBundle:
    """A bundle file written by build_kernel_bundle; MODULE_SIZE is the stripped .ko's, in bytes."""

    path: Path
    manifest: Manifest
    module_size: int


def module_stamps(recipe: KernelRecipe, tree: KernelTree, effective_version: str) -> dict[str, str]:
    """The ``nonstop_*`` keys to stamp into the module's .modinfo.

    The agent refuses a bundle whose module's ``nonstop_level`` differs from
    its manifest's level; the other keys are for people running modinfo(8).
    """
    cves = sorted({cve for fix in recipe.fixes for cve in fix.cves})
    return {
        "nonstop_level": str(recipe.level),
        "nonstop_recipe": recipe.name,
        "nonstop_target": f"{tree.release} build-id {tree.build_id}",
        "nonstop_effective_version": effective_version,
        "nonstop_cves": ",".join(cves) or "none",
        "nonstop_builder": BUILDER,
    }


def build_kernel_bundle(
    recipe: KernelRecipe, key: SigningKey, outdir: Path, tree: KernelTree
) -> BuiltBundle:
    """Compile RECIPE's level against TREE, check the module, sign and write its bundle.

    The bundle goes to ``OUTDIR/<module>-<release>.nsb`` (replacing any file
    there), written only after the module passed its checks; it carries the
    stripped module and the recipe's sources and headers under their bare file
    names. The effective version defaults to ``<Debian version>+nonstop<level>``.
    """
    effective_version = recipe.effective_version or f"{tree.version}+nonstop{recipe.level}"
    stamps = module_stamps(recipe, tree, effective_version)
    image = compile_module(tree, recipe, stamps)
    try:
        info = read_modinfo(image)
    except ModinfoError as exc:
        raise KernelBuildError(f"the built module is unreadable: {exc}") from None
    if not info.is_livepatch:
        raise KernelBuildError('the module lacks MODULE_INFO(livepatch, "Y") in its source')
    if info.name != recipe.module_name or info.release != tree.release:
        raise KernelBuildError(f"built module names {info.name} for {info.release}: unexpected")
    if info.get("nonstop_level") != str(recipe.level):
        raise KernelBuildError("the level stamp is missing from the built module")
    module_file = f"{recipe.module_name}.ko"
    sources = (*recipe.sources, *recipe.headers)
    files = {module_file: image} | {source.name: source.read_bytes() for source in sources}
    manifest = Manifest(
        kind="kernel",
        target=tree.target(),
        level=recipe.level,
        functions=recipe.functions,
        payload=tuple(
            describe_payload(name, "module" if name == module_file else "source", data)
            for name, data in sorted(files.items())
        ),
        effective_version=effective_version,
        builder=BUILDER,
        fixes=recipe.fixes,
        description=recipe.description,
    )
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"{recipe.module_name}-{tree.release}.nsb"
    path.write_bytes(pack(manifest, files, key))
    return BuiltBundle(path, manifest, len(image))


def register_build(builders: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kernel = builders.add_parser(
        "kernel", help="compile a livepatch level against a Debian kernel and sign its bundle"
    )
    kernel.add_argument("recipe", type=Path, metavar="RECIPE.toml")
    kernel.add_argument("--key", type=Path, required=True, help="signing.key (or its directory)")
    kernel.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    kernel.add_argument("--kernel-release", metavar="RELEASE", help="overrides the recipe's")
    kernel.add_argument("--kernel-version", metavar="VERSION", help="Debian package version")
    kernel.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help=f"kernel package cache (default {cache_dir('kernel')}, or $NONSTOP_KERNEL_CACHE)",
    )
    kernel.set_defaults(handler=cmd_build_kernel)


def cmd_build_kernel(args: argparse.Namespace) -> int:
    """``nonstop build kernel``: a BuilderError ends in a one-line error and exit status 1.

    With ``--kernel-release`` the recipe's package version is ignored (it names
    a package of the recipe's release): ``--kernel-version`` or apt's candidate.
    """
    try:
        recipe = load_recipe(args.recipe)
        release = args.kernel_release or recipe.release
        if not release:
            raise KernelBuildError("no kernel release: set [kernel] release or --kernel-release")
        version = args.kernel_version or (recipe.version if not args.kernel_release else None)
        key_path = args.key / PRIVATE_KEY_NAME if args.key.is_dir() else args.key
        key = load_signing_key(key_path)
        tree = fetch_kernel(release, version, args.cache)
        built = build_kernel_bundle(recipe, key, args.output, tree)
    except BuilderError as exc:
        fail("nonstop build kernel", str(exc))
    stdout.print(
        f"wrote {built.path}: kernel level {recipe.level} ({recipe.module_name}, "
        f"{built.module_size} bytes) for {tree.release} build-id {tree.build_id}, "
        f"signed with key {key.key_id}",
        markup=False,
    )
    return 0
