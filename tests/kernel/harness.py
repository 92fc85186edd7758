"""Everything a kernel guest run needs, shared by the tests and bench/kernel_transitions.py.

- the cached Debian kernel tree (fetched through the real package code);
- the test bundles, built with the real `nonstop build kernel` command: the
  example's levels 1 and 2 (examples/kernel), the test level 3, a level the
  kernel refuses at load time, a level that makes the kernel warn, a level
  whose new code sleeps, a bundle re-signed for another kernel build and a
  tampered copy;
- the plain test module nonstop_holdtarget.ko;
- a work directory the guest mounts (keys, bundles, agent config, state);
- a shell prelude for scenarios and a reader for what they recorded.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nonstop.builders.cache import cache_dir
from nonstop.builders.kernel.module import kbuild
from nonstop.builders.kernel.packages import (
    KernelPackageError,
    KernelTree,
    fetch_kernel,
)
from nonstop.builders.kernel.recipe import load_recipe
from nonstop.bundle import SigningKey, TrustedKeys, load_signing_key, open_bundle, pack
from nonstop.bundle.zipfmt import read_members, write_members
from nonstop.cli import main as nonstop_main
from tests.kernel.guest import build_initramfs

PROJECT = Path(__file__).resolve().parents[2]
# Outside the checkout, so that a fresh clone (CI's) reuses what an earlier run fetched.
CACHE = cache_dir("kernel")
EXAMPLES = PROJECT / "examples" / "kernel"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NONSTOPCTL = Path(sys.executable).parent / "nonstopctl"
HOLDTARGET = "nonstop_holdtarget"


def pinned_kernel() -> tuple[str, str]:
    """The exact kernel build (release, package version) the example recipes pin.

    The archive's newest kernel moves every few weeks; the suite targets one
    build that the archive keeps serving beside newer ones.
    """
    recipe = load_recipe(EXAMPLES / "level1.toml")
    if recipe.release is None or recipe.version is None:
        raise RuntimeError(f"{EXAMPLES / 'level1.toml'} must pin [kernel] release and version")
    return recipe.release, recipe.version


def kernel_tree() -> KernelTree:
    """The pinned Debian kernel, cached outside the checkout (~/.cache/nonstop/kernel)."""
    release, version = pinned_kernel()
    try:
        return fetch_kernel(release, version, cache_dir=CACHE)
    except KernelPackageError:
        # Apt lists that were never fetched or are stale do not name it yet: refresh once.
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        return fetch_kernel(release, version, cache_dir=CACHE)


@dataclass(frozen=True)
class GuestBundles:
    level1: Path
    level2: Path
    level3: Path
    broken: Path
    warns: Path
    sleepy: Path
    other_build: Path
    tampered: Path
    holdtarget: Path


def build_bundles(tree: KernelTree, key_dir: Path, out: Path) -> GuestBundles:
    """Build the test bundles with the real `nonstop build kernel` command."""
    out.mkdir(parents=True, exist_ok=True)
    recipes = {
        "level1": (EXAMPLES / "level1.toml", "nonstop_example_l1"),
        "level2": (EXAMPLES / "level2.toml", "nonstop_example_l2"),
        "level3": (FIXTURES / "level3.toml", "nonstop_example_l3"),
        "broken": (FIXTURES / "broken.toml", "nonstop_broken_l9"),
        "warns": (FIXTURES / "warns.toml", "nonstop_warns_l10"),
        "sleepy": (FIXTURES / "sleepy.toml", "nonstop_sleepy_l11"),
    }
    built = {}
    for name, (recipe, module) in recipes.items():
        argv = ["build", "kernel", str(recipe), "--key", str(key_dir), "-o", str(out)]
        argv += ["--kernel-release", tree.release, "--kernel-version", tree.version]
        argv += ["--cache", str(CACHE)]
        if nonstop_main(argv) != 0:
            raise RuntimeError(f"nonstop build kernel {recipe} failed")
        built[name] = out / f"{module}-{tree.release}.nsb"
    return GuestBundles(
        **built,
        other_build=resign_for_other_build(built["level1"], out / "other-build.nsb", key_dir),
        tampered=tamper_module(built["level1"], out / "tampered.nsb"),
        holdtarget=build_holdtarget(tree, out),
    )


def resign_for_other_build(source: Path, output: Path, key_dir: Path) -> Path:
    """A validly signed copy of SOURCE whose manifest names another build of the same release."""
    trusted = TrustedKeys([load_signing_key(key_dir / "signing.key").public()])
    bundle = open_bundle(source, trusted)
    manifest = bundle.manifest
    assert manifest.target.build_id is not None
    other_id = "%040x" % (int(manifest.target.build_id, 16) ^ 1)
    other = dataclasses.replace(
        manifest, target=dataclasses.replace(manifest.target, build_id=other_id)
    )
    key: SigningKey = load_signing_key(key_dir / "signing.key")
    output.write_bytes(pack(other, dict(bundle.files), key))
    return output


def tamper_module(source: Path, output: Path) -> Path:
    """SOURCE with one byte of its module changed, re-containered with valid CRCs.

    The manifest and its signature are kept as they were: only the payload
    digest the signed manifest lists can reveal the change.
    """
    members = [(name, bytes(data)) for name, data in read_members(source.read_bytes(), 66)]
    name, module = next((n, d) for n, d in members if n.endswith(".ko"))
    changed = bytearray(module)
    changed[len(changed) // 2] ^= 0x01
    output.write_bytes(write_members([(n, bytes(changed) if n == name else d) for n, d in members]))
    return output


def build_holdtarget(tree: KernelTree, out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="nonstop-holdtarget-") as tmp:
        work = Path(tmp)
        shutil.copy2(FIXTURES / f"{HOLDTARGET}.c", work)
        (work / "Kbuild").write_text(f"obj-m := {HOLDTARGET}.o\n")
        module = out / f"{HOLDTARGET}.ko"
        module.write_bytes(kbuild(tree, work, HOLDTARGET))
    return module


def prepare_work(work: Path, tree: KernelTree, trusted_dir: Path, bundles: GuestBundles) -> Path:
    """Lay out WORK for the guest (keys, bundles, agent config); return the initramfs."""
    for sub in ("keys", "bundles", "out"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    for key in trusted_dir.iterdir():
        shutil.copy2(key, work / "keys" / key.name)
    for field in dataclasses.fields(bundles):
        path: Path = getattr(bundles, field.name)
        shutil.copy2(path, work / "bundles" / f"{field.name}{path.suffix}")
    (work / "nonstopctl.toml").write_text(
        f'trusted_keys_dir = "{work}/keys"\n'
        f'state_dir = "{work}/state"\n'
        f'cache_dir = "{work}/cache"\n'
    )
    return build_initramfs(tree, work, work / "initramfs.cpio")


def scenario(work: Path, body: str) -> str:
    """SCENARIO shell text: helpers, then BODY.

    ``step NAME CMD...`` runs CMD and keeps its stdout, stderr, exit status and
    start/end times under out/; ``snap NAME`` records what the kernel shows
    (/proc/cmdline, /proc/loadavg, livepatch patches with their enabled and
    transition flags, /proc/modules);
    ``hold_task NAME`` starts a reader asleep in nonstop_hold_wait() (or the
    replacement a patch put there), waits until
    it is really there and keeps its pid, stack and (later) output as NAME.*.
    """
    prelude = f"""
W={work}
B=$W/bundles
OUT=$W/out
CTL={NONSTOPCTL}
mkdir -p $OUT
step() {{
    name=$1; shift
    start=$(date +%s.%N)
    "$@" > $OUT/$name.out 2> $OUT/$name.err
    echo $? > $OUT/$name.rc
    echo "$name $start $(date +%s.%N)" >> $OUT/timings
}}
snap() {{
    cat /proc/cmdline > $OUT/$1.cmdline
    cat /proc/loadavg > $OUT/$1.loadavg
    ls /sys/kernel/livepatch > $OUT/$1.patches
    for p in /sys/kernel/livepatch/*/; do
        [ -d "$p" ] || continue
        echo "$(basename $p) enabled=$(cat $p/enabled) transition=$(cat $p/transition)"
    done > $OUT/$1.sysfs
    cat /proc/modules > $OUT/$1.modules
}}
hold_task() {{
    [ -e /proc/nonstop_hold ] || busybox insmod $B/holdtarget.ko
    echo 0 > /proc/nonstop_hold
    cat /proc/nonstop_hold > $OUT/$1.out 2>&1 &
    HOLDER=$!
    echo $HOLDER > $OUT/$1.pid
    for i in $(seq 300); do
        grep -q hold_wait /proc/$HOLDER/stack 2>/dev/null && break
        sleep 0.1
    done
    cat /proc/$HOLDER/stack > $OUT/$1.stack
}}
nproc > $OUT/nproc.out
"""
    return prelude + body


class Results:
    """What a scenario recorded under WORK/out."""

    def __init__(self, work: Path) -> None:
        self.out = work / "out"

    def text(self, name: str, suffix: str = "out") -> str:
        return (self.out / f"{name}.{suffix}").read_text()

    def rc(self, name: str) -> int:
        return int(self.text(name, "rc").strip())

    def json(self, name: str) -> Any:
        return json.loads(self.text(name))

    def lines(self, name: str, suffix: str) -> list[str]:
        return self.text(name, suffix).split()

    def modules(self, name: str) -> dict[str, int]:
        """Module name -> size from a snapshot of /proc/modules."""
        sizes = {}
        for line in self.text(name, "modules").splitlines():
            fields = line.split()
            sizes[fields[0]] = int(fields[1])
        return sizes

    def timings(self) -> dict[str, float]:
        """Seconds each step took, as measured inside the guest."""
        seconds = {}
        for line in (self.out / "timings").read_text().splitlines():
            name, start, end = line.split()
            seconds[name] = float(end) - float(start)
        return seconds

    def failure_context(self, name: str) -> str:
        parts = [
            f"{suffix}: {self.text(name, suffix)}"
            for suffix in ("rc", "out", "err")
            if (self.out / f"{name}.{suffix}").exists()
        ]
        return "\n".join(parts)
