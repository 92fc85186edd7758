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
from importlib import resources
from pathlib import Path

from nonstop.bundle.identity import userspace_target_of
from nonstop.bundle.symbols import symbol_map_of
from nonstop.userspace import Engine, EngineOptions, PatchSpec
from userspace_common import load_average, require_root

HARDENING = ["-O2", "-fstack-protector-strong", "-fcf-protection", "-D_FORTIFY_SOURCE=2"]
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
    sources = resources.files("nonstop") / "demo_files"
    for name in ("libvault.c", "vault_service.c", "vault_patch.c"):
        (work / name).write_text((sources / name).read_text())
    library = work / "libvault.so.1"
    gcc = ["gcc", *HARDENING]
    subprocess.run([*gcc, "-fPIC", "-shared", "-Wl,-soname,libvault.so.1", "-o", str(library),
                    str(work / "libvault.c")], check=True)  # fmt: skip
    subprocess.run([*gcc, "-fPIE", "-pie", "-pthread", "-o", str(work / "vault_service"),
                    str(work / "vault_service.c"), str(library), "-Wl,-rpath,$ORIGIN"],
                   check=True)  # fmt: skip
    patch_flags = ["-O2", "-fPIC", "-ffunction-sections", "-fdata-sections", "-c"]
    subprocess.run(["gcc", *patch_flags, "-o", str(work / "patch.o"), str(work / "vault_patch.c")],
                   check=True)  # fmt: skip
    target = userspace_target_of(library, with_package=False)
    spec = PatchSpec(
        build_id=target.build_id,
        soname=target.soname,
        level=1,
        object_bytes=(work / "patch.o").read_bytes(),
        functions=(("vault_record", "vault_record_fixed"),),
        symbol_map=symbol_map_of(library),
    )
    return work / "vault_service", spec


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
