"""`nonstop demo`: the end-to-end story of the userspace engine on this machine.

It builds a small shared library with an off-by-one bug and a multithreaded
loopback service using it (Debian's hardening flags), shows a bad request
leaking a secret, signs cumulative level 1 and level 2 patches with
`nonstop bundle create`, applies level 1 live with `nonstopctl --lib-update`
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
from nonstop.bundle.symbols import symbol_map_of
from nonstop.console import stdout

HARDENING = ["-O2", "-g", "-fstack-protector-strong", "-fcf-protection", "-D_FORTIFY_SOURCE=2"]
PATCH_FLAGS = ["-O2", "-fPIC", "-ffunction-sections", "-fdata-sections", "-fcf-protection"]
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
    for name in ("libvault.c", "vault_service.c", "vault_patch.c"):
        (work / name).write_text((sources / name).read_text())

    step("build libvault.so.1 and vault_service with Debian's hardening flags")
    library = work / "libvault.so.1"
    _gcc(*HARDENING, "-fPIC", "-shared", "-Wl,-soname,libvault.so.1", "-Wl,-z,now", "-o",
         str(library), str(work / "libvault.c"))  # fmt: skip
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

    step("vendor: a signing key, a symbol map, level 1 and level 2 patch objects")
    generate_keypair(work / "vendor")
    trusted = work / "trusted"
    trusted.mkdir()
    shutil.copy(work / "vendor" / "signing.pub", trusted / "vendor.pub")
    symbols = work / "libvault.symbols.json"
    symbols.write_bytes(symbol_map_of(library).to_json_bytes())
    bundles = {}
    for level in (1, 2):
        patch = work / f"vault_patch{level}.o"
        _gcc(*PATCH_FLAGS, f"-DLEVEL={level}", "-c", "-o", str(patch), str(work / "vault_patch.c"))
        bundle = work / f"libvault-level{level}.nsb"
        argv = [
            "bundle", "create", "--kind", "userspace", "--target", str(library),
            "--object", str(patch), "--replace", "vault_record=vault_record_fixed",
            "--symbols", str(symbols), "--level", str(level), "--cve", "CVE-2099-0042",
            "--key", str(work / "vendor"), "-o", str(bundle),
        ]  # fmt: skip
        say("nonstop " + " ".join(argv).replace(str(work) + "/", ""))
        if nonstop_main(argv) != 0:
            raise DemoFailure(f"nonstop bundle create failed for level {level}")
        bundles[level] = bundle

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
    if after["vmas"] != before["vmas"] or after["patch_regions"] != 1:
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
        "dirty_kb": int(dirty.group(1)) if dirty else 0,
        "patch_regions": len(regions),
    }
