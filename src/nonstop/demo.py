"""`nonstop demo`: the end-to-end story of the userspace engine on this machine.

It builds a small shared library with an off-by-one bug and a multithreaded
loopback service using it (Debian's hardening flags), shows a bad request
leaking a secret, builds and signs cumulative level 1 and level 2 bundles from
the library's source fixes with `nonstop build userspace` (its rebuild
reproduces the running library, build-id for build-id), applies level 1 live
with `nonstopctl --lib-update`
(same process, connection kept, leak closed), replaces it with level 2
(memory and mappings flat), and unloads (original code back, byte for byte).
Every step checks what it shows; any surprise ends the demo with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from nonstop.bundle import generate_keypair
from nonstop.console import stdout

HARDENING = ["-O2", "-g", "-fstack-protector-strong", "-fcf-protection", "-D_FORTIFY_SOURCE=2"]
# How the library is built, by its "distribution" here and by the vendor's recipe.
LIBRARY_BUILD = (
    "$CC $CFLAGS -c -o libvault.o libvault.c && "
    "$CC -shared -Wl,-soname,libvault.so.1 -Wl,-z,now -o libvault.so.1 libvault.o"
)
LIBRARY_CFLAGS = " ".join([*HARDENING, "-fPIC", "-ffile-prefix-map={tree}=."])
FIXES = {
    "vault-fix1.patch": "vault_record: bounds check off by one",
    "vault-fix2.patch": "vault_record: count and report rejected requests",
}
BAD_REQUEST = "GET 3"
SECRET = "SECRET"
NONSTOPCTL = [sys.executable, "-c", "from nonstop.agent.cli import main; raise SystemExit(main())"]


class DemoFailure(Exception):
    """A demo step did not behave as the story says it must."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run the end-to-end demo on this machine")
    demo.set_defaults(handler=cmd_demo)


def step(text: str) -> None:
    stdout.print(f"[bold cyan]==>[/] {text}")


def say(text: str) -> None:
    stdout.print(f"    {text}", markup=False)


def cmd_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="nonstop-demo-") as tmp:
        try:
            run_demo(Path(tmp))
        except DemoFailure as exc:
            stdout.print(f"[bold red]demo failed:[/] {exc}")
            return 1
    stdout.print("[bold green]demo finished: every step behaved as expected[/]")
    return 0


def _gcc(*argv: str) -> None:
    done = subprocess.run(["gcc", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DemoFailure(f"gcc failed: {done.stderr.strip()[:300]}")


class Service:
    """The running vault service and one long-lived client connection to it."""

    def __init__(self, program: Path) -> None:
        self.process = subprocess.Popen([str(program), "0"], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        match = re.match(r"listening (\d+)", self.process.stdout.readline())
        if not match:
            raise DemoFailure("the service did not start")
        self.port = int(match.group(1))
        self.connection = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.reader = self.connection.makefile("r")

    def ask(self, request: str) -> str:
        self.connection.sendall(request.encode() + b"\n")
        return self.reader.readline().strip()

    def stop(self) -> None:
        self.connection.close()
        self.process.kill()
        self.process.wait()


def run_demo(work: Path) -> None:
    if os.geteuid() != 0:
        raise DemoFailure("the demo patches a running process with ptrace: run it as root")
    if shutil.which("gcc") is None:
        raise DemoFailure("gcc is needed (make demo installs it)")
    sources = resources.files("nonstop") / "demo_files"
    source = work / "libvault-1.0"
    source.mkdir()
    (source / "libvault.c").write_text((sources / "libvault.c").read_text())
    for name in (*FIXES, "vault_service.c"):
        (work / name).write_text((sources / name).read_text())

    step("build libvault.so.1 and vault_service with Debian's hardening flags")
    build = work / "distro-build"
    shutil.copytree(source, build)
    subprocess.run(
        ["/bin/sh", "-c", LIBRARY_BUILD],
        cwd=build,
        env={**os.environ, "CC": "gcc", "CFLAGS": LIBRARY_CFLAGS.format(tree=build)},
        check=True,
    )
    library = work / "libvault.so.1"
    shutil.copy(build / "libvault.so.1", library)
    service_program = work / "vault_service"
    _gcc(*HARDENING, "-fPIE", "-pie", "-pthread", "-o", str(service_program),
         str(work / "vault_service.c"), str(library), "-Wl,-rpath,$ORIGIN")  # fmt: skip
    say(f"{library.name} and {service_program.name} built in {work}")

    service = Service(service_program)
    try:
        _story(work, library, service)
    finally:
        service.stop()


def _story(work: Path, library: Path, service: Service) -> None:
    step(f"start the service (pid {service.process.pid}, port {service.port}) and send a bad input")
    say(f"GET 1 -> {service.ask('GET 1')}")
    leaked = service.ask(BAD_REQUEST)
    say(f"{BAD_REQUEST} -> {leaked}")
    if SECRET not in leaked:
        raise DemoFailure("the unpatched service was expected to leak its secret")
    say("the off-by-one bounds check leaks the secret stored after the table")

    from nonstop.cli import main as nonstop_main  # the command that imports this module

    step("vendor: build level 1 and level 2 from the source fixes with nonstop build userspace")
    generate_keypair(work / "vendor")
    trusted = work / "trusted"
    trusted.mkdir()
    shutil.copy(work / "vendor" / "signing.pub", trusted / "vendor.pub")
    recipe = _write_recipe(work, library)
    argv = ["build", "userspace", str(recipe), "--key", str(work / "vendor"),
            "-o", str(work / "bundles"), "--report", str(work / "report.txt")]  # fmt: skip
    say("nonstop " + " ".join(argv).replace(str(work) + "/", ""))
    if nonstop_main(argv) != 0:
        raise DemoFailure("nonstop build userspace did not build both levels")
    for line in (work / "report.txt").read_text().splitlines():
        if line.startswith(("level ", "  changed:", "  new data:", "  linked")):
            say(line.replace(str(work) + "/", ""))
    bundles = {level: work / "bundles" / f"libvault-level{level}.nsb" for level in (1, 2)}

    config = work / "nonstopctl.toml"
    config.write_text(
        f'trusted_keys_dir = "{trusted}"\nstate_dir = "{work / "state"}"\n'
        f'cache_dir = "{work / "cache"}"\n'
    )
    env = {**os.environ, "NONSTOP_CONFIG": str(config)}
    pid = service.process.pid

    step("a bundle tampered with in transit is refused before any process is touched")
    tampered = work / "tampered.nsb"
    data = bytearray(bundles[1].read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    done = _nonstopctl(env, "--lib-update", "--bundle", str(tampered), "--pid", str(pid))
    if done.returncode == 0:
        raise DemoFailure("a tampered bundle was accepted")
    say(done.stderr.strip())

    step("apply level 1 live: nonstopctl --lib-update --bundle libvault-level1.nsb")
    entry = _update(env, bundles[1], pid, expected_level=1)
    say(f"pid {pid}: {entry['result']}, paused {entry['pause_us']} us")
    _check_alive(service)
    handled = service.ask(BAD_REQUEST)
    say(f"same connection, {BAD_REQUEST} -> {handled}")
    if SECRET in handled or service.ask("GET 1") != "bob: 1 parcel":
        raise DemoFailure("level 1 did not fix the leak or broke good requests")
    before = _memory(pid)
    say(f"memory: {before['vmas']} mappings, {before['dirty_kb']} kB private dirty")
    for line in _nonstopctl(env, "--lib-info").stdout.splitlines():
        say(line)

    step("apply level 2 over level 1: it replaces level 1, memory stays flat")
    entry = _update(env, bundles[2], pid, expected_level=2)
    say(f"pid {pid}: {entry['result']} (level {entry['level_before']} -> {entry['level_after']})")
    say(f"{BAD_REQUEST} -> {service.ask(BAD_REQUEST)}")
    after = _memory(pid)
    say(f"memory: {after['vmas']} mappings, {after['dirty_kb']} kB private dirty")
    # Level 2 brings new variables (one more, writable, mapping of the same region);
    # stacking instead of replacing would leave two patch regions.
    if after["other_vmas"] != before["other_vmas"] or after["patch_regions"] != 1:
        raise DemoFailure(f"level 2 did not replace level 1 in place: {before} -> {after}")
    if after["dirty_kb"] > before["dirty_kb"] + 16:
        raise DemoFailure(f"memory grew from level 1 to level 2: {before} -> {after}")

    step("unload: the original code is back")
    done = _nonstopctl(env, "--lib-unload", "--pid", str(pid), "--json")
    (entry,) = json.loads(done.stdout)["processes"]
    if entry["result"] != "reverted":
        raise DemoFailure(f"unload failed: {entry['reason']}")
    _check_alive(service)
    again = service.ask(BAD_REQUEST)
    say(f"{BAD_REQUEST} -> {again}  (the original, buggy code again)")
    if SECRET not in again or _memory(pid)["patch_regions"] != 0:
        raise DemoFailure("the original code did not come back")


def _write_recipe(work: Path, library: Path) -> Path:
    """The vendor's recipe: the library's source, its build, the running binary, two fixes."""
    fixes = "".join(
        f'\n[[fix]]\ntitle = "{title}"\ncves = ["CVE-2099-0042"]\npatch = "{work / name}"\n'
        for name, title in FIXES.items()
    )
    recipe = work / "libvault.toml"
    recipe.write_text(
        f'name = "libvault"\neffective_version = "1.0"\n\n'
        f'[source]\ndir = "{work / "libvault-1.0"}"\n\n'
        f'[build]\ncommand = "{LIBRARY_BUILD}"\nlibrary = "libvault.so.1"\n\n'
        f'[compiler]\ncc = "gcc"\ncflags = "{LIBRARY_CFLAGS}"\n\n'
        f'[target]\nbinary = "{library}"\n{fixes}'
    )
    return recipe


def _nonstopctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NONSTOPCTL, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _update(env: dict[str, str], bundle: Path, pid: int, expected_level: int) -> dict[str, Any]:
    done = _nonstopctl(env, "--lib-update", "--bundle", str(bundle), "--pid", str(pid), "--json")
    try:
        (entry,) = json.loads(done.stdout)["processes"]
    except (ValueError, KeyError):
        raise DemoFailure(f"nonstopctl failed: {done.stderr.strip()}") from None
    if entry["result"] != "patched" or entry["level_after"] != expected_level:
        raise DemoFailure(f"level {expected_level} was not applied: {entry}")
    result: dict[str, Any] = entry
    return result


def _check_alive(service: Service) -> None:
    if service.process.poll() is not None:
        raise DemoFailure("the service died")


def _memory(pid: int) -> dict[str, int]:
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    dirty = re.search(r"^Private_Dirty:\s+(\d+)", rollup, re.M)
    regions = {line.split()[4] for line in maps if "/memfd:nonstop:" in line}
    return {
        "vmas": len(maps),
        "other_vmas": sum(1 for line in maps if "/memfd:nonstop:" not in line),
        "dirty_kb": int(dirty.group(1)) if dirty else 0,
        "patch_regions": len(regions),
    }
