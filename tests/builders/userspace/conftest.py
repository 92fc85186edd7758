"""Fixtures for the builder's tests: recipes over the libvuln fixture, built once per session."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from nonstop.builders.userspace.builder import BuildResult, build_userspace
from nonstop.builders.userspace.recipe import load_recipe
from nonstop.bundle import Bundle, SigningKey, TrustedKeys, open_bundle

LIBVULN = Path(__file__).resolve().parents[2] / "fixtures" / "builders" / "libvuln"
HARDENED = (
    "-O2 -g -fstack-protector-strong -fcf-protection -D_FORTIFY_SOURCE=2 -fPIC "
    "-ffile-prefix-map={tree}=."
)
TITLES = {
    "bounds": ("bounds check in vuln_get", ["CVE-2099-1001"]),
    "helper": ("clamp the checksum length", ["CVE-2099-1002"]),
    "inline": ("range check in in_range", ["CVE-2099-1003"]),
    "switch": ("format the overflow code", ["CVE-2099-1004"]),
    "static-var": ("count failed logins", ["CVE-2099-1005"]),
    "struct": ("longer record names", ["CVE-2099-1006"]),
    "global-init": ("lower the default limit", ["CVE-2099-1007"]),
    "ctor": ("constructor sets the ready state", []),
    "ifunc": ("resolver checks the CPU", []),
    "short": ("vuln_zero returns one", []),
    "static-call": ("normalize ids", ["CVE-2099-1011"]),
    "cold": ("ports map one to one", ["CVE-2099-1012"]),
    "clone": ("cap weights at 1000", ["CVE-2099-1013"]),
}


def write_recipe(
    directory: Path,
    fixes: tuple[str, ...],
    target: Path | None = None,
    cflags: str = HARDENED,
    name: str = "libvuln",
) -> Path:
    """A recipe over the libvuln fixture with FIXES (patch names under fixes/)."""
    target_table = f'binary = "{target}"' if target else "build_is_target = true"
    text = f"""
name = "{name}"

[source]
dir = "{LIBVULN}"

[build]
command = "make"
library = "libvuln.so.1"

[compiler]
cc = "gcc"
cflags = "{cflags}"

[target]
{target_table}
"""
    for fix in fixes:
        title, cves = TITLES[fix]
        text += f"""
[[fix]]
title = "{title}"
cves = {cves!r}
patch = "{LIBVULN / "fixes" / (fix + ".patch")}"
"""
    directory.mkdir(parents=True, exist_ok=True)
    recipe = directory / "recipe.toml"
    recipe.write_text(text.replace("'", '"'))
    return recipe


@dataclass
class Built:
    result: BuildResult
    outdir: Path
    trusted: TrustedKeys

    def level(self, number: int):
        return self.result.levels[number - 1]

    def bundle(self, number: int) -> Bundle:
        path = self.level(number).bundle
        assert path is not None, f"level {number} has no bundle: {self.level(number).refusals}"
        return open_bundle(path, self.trusted)

    def patch_object(self, number: int) -> ELFFile:
        return ELFFile(io.BytesIO(self.bundle(number).payload("object")))


BuildFixes = Callable[..., Built]


@pytest.fixture(scope="session")
def build_fixes(
    tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey, trusted: TrustedKeys
) -> BuildFixes:
    """Build libvuln with the given fixes (cached per session: builds take a second or two)."""
    cache: dict[tuple[tuple[str, ...], Path | None], Built] = {}

    def build(*fixes: str, target: Path | None = None) -> Built:
        key = (fixes, target)
        if key not in cache:
            directory = tmp_path_factory.mktemp("recipe-" + "-".join(fixes))
            recipe = load_recipe(write_recipe(directory, fixes, target))
            outdir = directory / "out"
            result = build_userspace(recipe, signing_key, outdir)
            cache[key] = Built(result, outdir, trusted)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def stripped_libvuln(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libvuln as a distribution ships it: built by its own make, then stripped."""
    directory = tmp_path_factory.mktemp("production") / "libvuln-1.0"
    shutil.copytree(LIBVULN, directory)
    flags = HARDENED.replace("{tree}", str(directory))
    subprocess.run(["make", "-s", f"CFLAGS={flags}"], cwd=directory, check=True)
    library = directory / "libvuln.so.1"
    subprocess.run(["strip", "--strip-unneeded", str(library)], check=True)
    return library
