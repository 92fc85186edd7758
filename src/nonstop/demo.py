"""`nonstop demo`: the end-to-end story on this machine, with embedded defaults.

So far the story covers what exists: a vendor key, signed cumulative bundles
for a real library on this host, verification, and refusal of tampering and of
downgrades. Each later part (engine, kernel driver, server, agent) extends it.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from nonstop.bundle import (
    Fix,
    FunctionPatch,
    LevelAction,
    Manifest,
    TrustedKeys,
    decide_level,
    describe_payload,
    generate_keypair,
    open_bundle,
    pack,
)
from nonstop.bundle.errors import BundleError, LevelPolicyError
from nonstop.bundle.identity import userspace_target_of
from nonstop.console import stdout

DEMO_TARGET = Path("/lib/x86_64-linux-gnu/libc.so.6")
PATCH_SOURCE = """
#include <stddef.h>
size_t demo_strnlen_fixed(const char *s, size_t max) {
    size_t n = 0;
    while (n < max && s[n]) n++;
    return n;
}
"""


class DemoFailure(Exception):
    """A demo step did not behave as the story says it must."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run the end-to-end demo on this machine")
    demo.set_defaults(handler=cmd_demo)


def step(text: str) -> None:
    stdout.print(f"[bold cyan]==>[/] {text}")


def cmd_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="nonstop-demo-") as tmp:
        try:
            run_demo(Path(tmp))
        except DemoFailure as exc:
            stdout.print(f"[bold red]demo failed:[/] {exc}")
            return 1
    stdout.print("[bold green]demo finished: every step behaved as expected[/]")
    return 0


def run_demo(work: Path) -> None:
    step("vendor creates a signing key")
    key = generate_keypair(work / "vendor")
    stdout.print(f"    key id {key.key_id}")
    trusted_dir = work / "trusted"
    trusted_dir.mkdir()
    (trusted_dir / "vendor.pub").write_bytes((work / "vendor" / "signing.pub").read_bytes())
    trusted = TrustedKeys.from_dir(trusted_dir)

    step(f"identify the target library {DEMO_TARGET} by its build-id")
    target = userspace_target_of(DEMO_TARGET)
    package = f"{target.package.name} {target.package.version}" if target.package else "unknown"
    stdout.print(f"    {target.describe()}, package {package}", markup=False)

    step("compile a patch object and sign cumulative levels 1 and 2")
    source = work / "patch.c"
    source.write_text(PATCH_SOURCE)
    obj = work / "patch.o"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-fPIC",
            "-ffunction-sections",
            "-fdata-sections",
            "-c",
            "-o",
            str(obj),
            str(source),
        ],
        check=True,
    )
    bundles = []
    for level in (1, 2):
        fixes = tuple(
            Fix(title=f"demo fix {n}", cves=(f"CVE-2099-000{n}",)) for n in range(1, level + 1)
        )
        files = {"patch.o": obj.read_bytes()}
        manifest = Manifest(
            kind="userspace",
            target=target,
            level=level,
            functions=(FunctionPatch(target="strnlen", replacement="demo_strnlen_fixed"),),
            payload=(describe_payload("patch.o", "object", files["patch.o"]),),
            effective_version=f"demo+nonstop{level}",
            builder="nonstop demo",
            fixes=fixes,
        )
        path = work / f"libc-level{level}.nsb"
        path.write_bytes(pack(manifest, files, key))
        bundles.append(path)
        stdout.print(f"    {path.name}: level {level}, CVEs {', '.join(manifest.cves)}")

    step("a host verifies the bundles against its trusted keys")
    verified = [open_bundle(path, trusted) for path in bundles]
    for bundle in verified:
        stdout.print(f"    level {bundle.manifest.level}: signed by {bundle.key_id}, verified")

    step("a bundle tampered with in transit is refused")
    data = bytearray(bundles[1].read_bytes())
    data[-200] ^= 0x40
    try:
        open_bundle(bytes(data), trusted)
    except BundleError as exc:
        stdout.print(f"    refused: {type(exc).__name__}: {exc}", markup=False)
    else:
        raise DemoFailure("a tampered bundle was accepted")

    step("cumulative levels only move up unless a rollback is asked for")
    if decide_level(1, 2) is not LevelAction.APPLY:
        raise DemoFailure("level 2 should replace level 1")
    try:
        decide_level(2, 1)
    except LevelPolicyError as exc:
        stdout.print(f"    level 1 over level 2: {exc}", markup=False)
    else:
        raise DemoFailure("a downgrade was allowed without being asked for")
