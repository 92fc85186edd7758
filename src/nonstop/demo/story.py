"""`nonstop demo`: the whole service story on this machine.

It builds a small shared library with an off-by-one bug and a multithreaded
loopback service using it (Debian's hardening flags), shows a bad request
leaking a secret, builds and signs cumulative level 1 and level 2 bundles from
the library's source fixes with `nonstop build userspace` (its rebuild
reproduces the running library, build-id for build-id). Then the service
side: a patch server on its embedded defaults (`nonstop serve`, SQLite in a
temporary data dir, loopback), an admin token, a registration key pinned to
level 1, both bundles uploaded (a tampered one refused). The agent registers;
`nonstopctl --auto-update` patches the running service to level 1 (same
process, connection kept, leak closed); lifting the pin, the next update
replaces it with level 2 (memory and mappings flat); `--lib-info` and
`--status` show it. The daemon then patches a service started afterwards,
soon after its exec; unload brings the original code back.
Every step checks what it shows; any surprise ends the demo with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from rich.markup import escape

from nonstop.agent.daemon import NONSTOPCTL
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
NONSTOP = [sys.executable, "-c", "from nonstop.cli import main; raise SystemExit(main())"]


class DemoFailure(Exception):
    """A demo step did not behave as the story says it must."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="run the end-to-end demo on this machine")
    demo.set_defaults(handler=cmd_demo)


def step(text: str) -> None:
    """Print a step heading; TEXT is rich markup, so square brackets in it must be escaped."""
    stdout.print(f"[bold cyan]==>[/] {text}")


def say(text: str) -> None:
    """Print a detail line under the current step; TEXT is plain (no markup)."""
    stdout.print(f"    {text}", markup=False)


def cmd_demo(args: argparse.Namespace) -> int:
    """``nonstop demo``: exit status 0 if every step behaved, 1 after a failure of any step.

    Works in a temporary directory removed at the end. A failed command or
    tool (OSError, CalledProcessError) is a failed step too, named in one line.
    """
    with tempfile.TemporaryDirectory(prefix="nonstop-demo-") as tmp:
        try:
            run_demo(Path(tmp))
        except (DemoFailure, OSError, subprocess.SubprocessError) as exc:
            stdout.print(f"[bold red]demo failed:[/] {escape(str(exc))}")
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
        self.program = program
        self.process = subprocess.Popen([str(program), "0"], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        try:
            match = re.match(r"listening (\d+)", self.process.stdout.readline())
            if not match:
                raise DemoFailure("the service did not start")
            self.port = int(match.group(1))
            self.connection = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except (DemoFailure, OSError) as exc:
            self.process.kill()
            self.process.wait()
            raise DemoFailure(f"the service did not start: {exc}") from None
        self.reader = self.connection.makefile("r")

    def ask(self, request: str) -> str:
        """Send one request line on the kept connection; its reply line, or "" if it closed.

        Raises TimeoutError if no reply comes within 5 s.
        """
        self.connection.sendall(request.encode() + b"\n")
        return self.reader.readline().strip()

    def stop(self) -> None:
        """Close the connection, kill the service (SIGKILL) and reap it."""
        self.connection.close()
        self.process.kill()
        self.process.wait()


def run_demo(work: Path) -> None:
    """Tell the whole story in WORK, an empty directory; DemoFailure names the first surprise.

    Needs root and gcc. The services, the patch server and the daemon it
    starts are stopped on the way out, success or not.
    """
    if os.geteuid() != 0:
        raise DemoFailure("the demo patches a running process with ptrace: run it as root")
    if shutil.which("gcc") is None:
        raise DemoFailure("gcc is needed (make demo installs it)")
    step("build libvault.so.1 and vault_service with Debian's hardening flags")
    library, service_program = build_vault(work)
    say(f"{library.name} and {service_program.name} built in {work}")

    service = Service(service_program)
    try:
        _story(work, library, service)
    finally:
        service.stop()


def build_vault(work: Path) -> tuple[Path, Path]:
    """The demo's library and service, built as a distribution would (also used by bench/).

    Leaves the library's source and the fixes in WORK for ``write_recipe``.
    """
    sources = resources.files("nonstop.demo") / "files"
    source = work / "libvault-1.0"
    source.mkdir()
    (source / "libvault.c").write_text((sources / "libvault.c").read_text())
    for name in (*FIXES, "vault_service.c"):
        (work / name).write_text((sources / name).read_text())
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
    return library, service_program


def _story(work: Path, library: Path, service: Service) -> None:
    step(f"start the service (pid {service.process.pid}, port {service.port}) and send a bad input")
    say(f"GET 1 -> {service.ask('GET 1')}")
    leaked = service.ask(BAD_REQUEST)
    say(f"{BAD_REQUEST} -> {leaked}")
    if SECRET not in leaked:
        raise DemoFailure("the unpatched service was expected to leak its secret")
    say("the off-by-one bounds check leaks the secret stored after the table")

    step("vendor: build level 1 and level 2 from the source fixes with nonstop build userspace")
    generate_keypair(work / "vendor")
    trusted = work / "trusted"
    trusted.mkdir()
    shutil.copy(work / "vendor" / "signing.pub", trusted / "vendor.pub")
    recipe = write_recipe(work, library)
    argv = ["build", "userspace", str(recipe), "--key", str(work / "vendor"),
            "-o", str(work / "bundles"), "--report", str(work / "report.txt")]  # fmt: skip
    say("nonstop " + " ".join(argv).replace(str(work) + "/", ""))
    built = subprocess.run([*NONSTOP, *argv], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise DemoFailure(f"nonstop build userspace did not build both levels: {built.stderr}")
    for line in (work / "report.txt").read_text().splitlines():
        if line.startswith(("level ", "  changed:", "  new data:", "  linked")):
            say(line.replace(str(work) + "/", ""))
    bundles = {level: work / "bundles" / f"libvault-level{level}.nsb" for level in (1, 2)}

    config = work / "nonstopctl.toml"
    config.write_text(
        f'trusted_keys_dir = "{trusted}"\nstate_dir = "{work / "state"}"\n'
        f'cache_dir = "{work / "cache"}"\nserver_attempts = 2\n'
        "daemon_interval_hours = 24\n"
    )
    env = {**os.environ, "NONSTOP_CONFIG": str(config)}

    step("start a patch server on its embedded defaults: SQLite in a temporary data dir")
    with _patch_server(work, trusted) as server:
        _service_story(work, env, server, bundles, service)
    say("patch server stopped")


class PatchServer:
    """`nonstop serve` on loopback, and what an operator does with it through the admin API."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.token = ""

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the admin API with TOKEN; the decoded JSON reply (None if empty).

        A status of 300 or more raises DemoFailure quoting the reply.
        """
        import httpx

        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        response = httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)
        if response.status_code >= 300:
            raise DemoFailure(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response.json() if response.content else None


@contextmanager
def _patch_server(work: Path, trusted: Path) -> Iterator[PatchServer]:
    import httpx

    data_dir = work / "server"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = PatchServer(f"http://127.0.0.1:{port}", data_dir)
    log = (work / "server.log").open("wb")
    argv = ["serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}",
            "--vendor-keys", str(trusted)]  # fmt: skip
    say("nonstop " + " ".join(argv).replace(str(work) + "/", ""))
    process = subprocess.Popen([*NONSTOP, *argv], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise DemoFailure(f"the patch server did not start (log: {work / 'server.log'})")
            time.sleep(0.1)
        say(f"listening on {server.url}")
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _service_story(
    work: Path, env: dict[str, str], server: PatchServer, bundles: dict[int, Path], service: Service
) -> None:
    pid = service.process.pid
    step("operator: an admin token, a registration key pinned to level 1, the bundles uploaded")
    done = subprocess.run(
        [*NONSTOP, "admin", "token", "create", "--data-dir", str(server.data_dir),
         "--name", "demo", "--scope", "*", "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise DemoFailure(f"nonstop admin token create failed: {done.stderr.strip()}")
    server.token = json.loads(done.stdout)["token"]
    key = server.admin(
        "POST", "/api/v1/admin/keys", json={"name": "demo", "feed": "test", "sticky": "level:1"}
    )
    say(f"registration key {key['id']} (feed test, sticky level:1)")
    tampered = bytearray(bundles[1].read_bytes())
    tampered[len(tampered) // 2] ^= 0x01
    try:
        server.admin("POST", "/api/v1/admin/bundles", content=bytes(tampered),
                     headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    except DemoFailure as refused:
        say(f"a tampered bundle is refused: {str(refused)[:110]}")
    else:
        raise DemoFailure("the server accepted a tampered bundle")
    for level, path in bundles.items():
        uploaded = server.admin("POST", "/api/v1/admin/bundles", content=path.read_bytes(),
                                headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        say(f"uploaded level {level}: {uploaded['sha256'][:16]}... ({uploaded['target_name']})")

    step("host: nonstopctl --register KEY --server URL, then --status")
    registered = _ctl_json(env, "--register", key["key"], "--server", server.url)
    say(f"registered as host {registered['host_id']} (the token stays in the state dir, 0600)")
    _expect_status(env, 2)

    step("nonstopctl --auto-update: check in, download, verify, apply to the running service")
    _auto_update(env, pid, expected_level=1)
    _check_alive(service)
    handled = service.ask(BAD_REQUEST)
    say(f"same connection, {BAD_REQUEST} -> {handled}")
    if SECRET in handled or service.ask("GET 1") != "bob: 1 parcel":
        raise DemoFailure("level 1 did not fix the leak or broke good requests")
    before = _memory(pid)
    say(f"memory: {before['vmas']} mappings, {before['dirty_kb']} kB private dirty")

    step("operator lifts the pin; the next --auto-update replaces level 1 with level 2")
    server.admin("PATCH", f"/api/v1/admin/hosts/{registered['host_id']}", json={"sticky": None})
    _auto_update(env, pid, expected_level=2)
    say(f"{BAD_REQUEST} -> {service.ask(BAD_REQUEST)}")
    after = _memory(pid)
    say(f"memory: {after['vmas']} mappings, {after['dirty_kb']} kB private dirty")
    # Level 2 brings new variables (one more, writable, mapping of the same region);
    # stacking instead of replacing would leave two patch regions.
    if after["other_vmas"] != before["other_vmas"] or after["patch_regions"] != 1:
        raise DemoFailure(f"level 2 did not replace level 1 in place: {before} -> {after}")
    if after["dirty_kb"] > before["dirty_kb"] + 16:
        raise DemoFailure(f"memory grew from level 1 to level 2: {before} -> {after}")
    for line in _nonstopctl(env, "--lib-info").stdout.splitlines():
        say(f"--lib-info: {line}")
    _expect_status(env, 0)

    step("nonstopctl --daemon: a service started now is patched soon after its exec")
    daemon_log = work / "daemon.log"
    with daemon_log.open("wb") as log:
        daemon = subprocess.Popen([*NONSTOPCTL, "--daemon"], env=env, stdout=log, stderr=log)
    try:
        _wait_for(daemon_log, r"running: 1 userspace target", daemon)
        newcomer = Service(service.program)
        try:
            found = _wait_for(
                daemon_log,
                rf"pid {newcomer.process.pid} .* patched, ([0-9.]+) ms after exec",
                daemon,
            )
            say(f"new service pid {newcomer.process.pid}: level 2, {found.group(1)} ms after exec")
            answer = newcomer.ask(BAD_REQUEST)
            say(f"new service, {BAD_REQUEST} -> {answer}")
            if SECRET in answer:
                raise DemoFailure("the new service was not patched")
        finally:
            newcomer.stop()
    finally:
        daemon.send_signal(signal.SIGTERM)
        if daemon.wait(timeout=60) != 0:
            raise DemoFailure(f"the daemon did not stop cleanly (log: {daemon_log})")
    say("daemon stopped (SIGTERM)")

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


def write_recipe(work: Path, library: Path) -> Path:
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


def _ctl_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = _nonstopctl(env, *args, "--json")
    try:
        document: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise DemoFailure(f"nonstopctl {args[0]} failed: {done.stderr.strip()}") from None
    if done.returncode != 0:
        raise DemoFailure(f"nonstopctl {args[0]} failed: {done.stderr.strip()}")
    return document


def _expect_status(env: dict[str, str], expected: int) -> None:
    status = _nonstopctl(env, "--status")
    say(f"nonstopctl --status -> exit {status.returncode} ({status.stdout.strip()})")
    if status.returncode != expected:
        raise DemoFailure(f"--status should have exited {expected}: {status.stderr.strip()}")


def _auto_update(env: dict[str, str], pid: int, expected_level: int) -> None:
    document = _ctl_json(env, "--auto-update")
    applied = document["online"].get("applied", [])
    entries = [p for item in applied for p in item["processes"] if p["pid"] == pid]
    if len(entries) != 1 or entries[0]["result"] != "patched":
        raise DemoFailure(f"level {expected_level} was not applied: {document['online']}")
    entry = entries[0]
    if entry["level_after"] != expected_level:
        raise DemoFailure(f"expected level {expected_level}, got {entry['level_after']}")
    say(f"pid {pid}: level {entry['level_before'] or '-'} -> {entry['level_after']}, "
        f"paused {entry['pause_us']} us")  # fmt: skip


def _wait_for(log: Path, pattern: str, process: subprocess.Popen[bytes]) -> re.Match[str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise DemoFailure(f"the daemon did not report {pattern!r} (log: {log})")


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
