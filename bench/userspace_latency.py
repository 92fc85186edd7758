"""p99 latency of a loopback service that calls the patched function, under load from a
second process, while patching and unpatching it 100 times, vs. without patching (same run).

    .venv/bin/python bench/userspace_latency.py [CYCLES]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nonstop.bundle import TrustedKeys, generate_keypair, open_bundle
from nonstop.cli import main as nonstop_main
from nonstop.demo.story import build_vault, write_recipe
from nonstop.userspace import Engine, EngineOptions, PatchSpec
from nonstop.userspace.bundles import spec_from_bundle
from userspace_common import load_average, require_root

CLIENT = r"""
import json, socket, sys, threading, time
port, seconds, connections = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
latencies = []
def run():
    sock = socket.create_connection(("127.0.0.1", port))
    reader = sock.makefile("rb")
    mine = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        sock.sendall(b"GET 1\n")
        reader.readline()
        mine.append((time.perf_counter() - started) * 1e6)
    latencies.extend(mine)
threads = [threading.Thread(target=run) for _ in range(connections)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(latencies))
"""


def build(work: Path) -> tuple[Path, PatchSpec]:
    """The demo's service, and level 1 of its library built from the fix by the builder."""
    library, program = build_vault(work)
    generate_keypair(work / "vendor")
    argv = ["build", "userspace", str(write_recipe(work, library)), "--key", str(work / "vendor"),
            "-o", str(work / "bundles")]  # fmt: skip
    if nonstop_main(argv) != 0:
        raise SystemExit("nonstop build userspace failed")
    trusted = TrustedKeys.from_dir(work / "vendor")  # holds signing.pub
    return program, spec_from_bundle(open_bundle(work / "bundles" / "libvault-level1.nsb", trusted))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * (len(ordered) - 1)))]


def load(port: int, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CLIENT, str(port), str(seconds), "4"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def report(label: str, latencies: list[float]) -> float:
    p99 = percentile(latencies, 0.99)
    print(f"  {label:34} {len(latencies):6} requests  p50 {percentile(latencies, 0.5):6.0f} us  "
          f"p99 {p99:6.0f} us  max {max(latencies):7.0f} us")  # fmt: skip
    return p99


def main() -> None:
    require_root()
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        program, spec = build(work)
        service = subprocess.Popen([str(program), "0"], stdout=subprocess.PIPE, text=True)
        assert service.stdout is not None
        port = int(re.findall(r"\d+", service.stdout.readline())[0])
        try:
            engine = Engine(EngineOptions(lock_dir=work / "locks"))
            engine.apply(service.pid, spec)  # warm the ELF models, then start clean
            engine.revert(service.pid)
            started = time.monotonic()
            for _ in range(cycles):
                engine.apply(service.pid, spec)
                engine.revert(service.pid)
            seconds = max(time.monotonic() - started, 3.0)

            baseline = load(port, seconds)
            quiet = json.loads(baseline.communicate()[0])
            busy = load(port, seconds)
            pauses = []
            for _ in range(cycles):
                for result in (engine.apply(service.pid, spec), engine.revert(service.pid)):
                    assert result.result in ("patched", "reverted"), result
                    pauses.append(result.pause_us)
            patching = json.loads(busy.communicate()[0])
            print(f"loopback service, 4 client connections from a second process, {seconds:.1f} s "
                  f"each (load {load_average()})")  # fmt: skip
            p99_quiet = report("without patching", quiet)
            p99_busy = report(f"while patching/unpatching {cycles}x", patching)
            print(
                f"  p99 ratio patching / quiet: {p99_busy / p99_quiet:.2f}; "
                f"pauses median {sorted(pauses)[len(pauses) // 2]} us, max {max(pauses)} us"
            )
        finally:
            service.kill()
            service.wait()


if __name__ == "__main__":
    main()
