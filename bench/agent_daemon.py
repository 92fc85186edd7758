"""The agent daemon: exec -> patched latency for new processes, and its idle footprint.

    .venv/bin/python bench/agent_daemon.py [--runs 30] [--idle-seconds 120]

Level 2 of the nsfix fixture is recorded (applied once with --lib-update), then
`nonstopctl --daemon` runs (rescan every hour, so only the exec path can patch).
Each run starts nsfix_prog and polls its /proc/PID/maps every ~0.2 ms until
the level 2 patch memory appears: exec -> patched as seen from outside (from
just before fork+exec). The daemon's own figure (from the exec event) is read
from its log. Then the daemon is left idle: RSS, and CPU time over the window
scaled to one hour (other processes exec'ing on the machine count: the daemon
looks at each new process).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from userspace_common import (
    CACHE,
    build_fixtures,
    load_average,
    require_root,
    signed_bundles,
    summary,
)

NONSTOPCTL = [sys.executable, "-c", "from nonstop.agent.cli import main; raise SystemExit(main())"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def count_execs(seconds: float) -> int:
    """Exec events on the whole machine during SECONDS (each one the daemon looks at)."""
    from nonstop.agent.exec_watch import ExecWatcher

    seen = 0
    deadline = time.monotonic() + seconds
    with ExecWatcher() as watcher:
        while (left := deadline - time.monotonic()) > 0:
            seen += len(watcher.wait(left))
    return seen


def wait_for(log: Path, pattern: str, timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        time.sleep(0.01)
    raise SystemExit(f"daemon never logged {pattern!r}: {log.read_text()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--idle-seconds", type=float, default=120)
    args = parser.parse_args()
    require_root()
    build_fixtures()
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        work = Path(tmp)
        bundles, env = signed_bundles(work, (2,))
        with (work / "nonstopctl.toml").open("a") as config:
            config.write("daemon_rescan_seconds = 3600\nauto_update = false\n")
        first = subprocess.Popen([str(CACHE / "nsfix_prog"), "0", "1"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)  # fmt: skip
        time.sleep(0.2)
        subprocess.run([*NONSTOPCTL, "--lib-update", "--bundle", str(bundles[2])], env=env,
                       check=True, capture_output=True)  # fmt: skip
        first.kill()
        first.wait()
        log = work / "daemon.log"
        with log.open("wb") as out:
            daemon = subprocess.Popen([*NONSTOPCTL, "--daemon"], env=env, stdout=out, stderr=out)
        try:
            wait_for(log, "running: 1 userspace target")
            outside, inside = [], []
            for _ in range(args.runs):
                start = time.monotonic()
                program = [str(CACHE / "nsfix_prog"), "0", "1"]
                process = subprocess.Popen(program, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                maps = Path(f"/proc/{process.pid}/maps")
                while ":L2" not in maps.read_text():
                    if time.monotonic() - start > 10:
                        tail = log.read_text(errors="replace")[-2000:]
                        raise SystemExit(f"a new process was not patched within 10 s:\n{tail}")
                    time.sleep(0.0002)
                outside.append(1000 * (time.monotonic() - start))
                found = wait_for(log, rf"pid {process.pid} .* patched, ([0-9.]+) ms after exec")
                inside.append(float(found.group(1)))
                process.kill()
                process.wait()
                time.sleep(0.1)
            print(f"new process, exec -> patched (ms, {args.runs} runs, load {load_average()})")
            print(f"  seen from outside (fork+exec to patch memory in maps): {summary(outside)}")
            print(f"  daemon's own (exec event to patched):                 {summary(inside)}")
            time.sleep(2)
            rss_before, cpu_before = rss_kb(daemon.pid), cpu_seconds(daemon.pid)
            execs = count_execs(args.idle_seconds)
            cpu = cpu_seconds(daemon.pid) - cpu_before
            print(f"idle daemon over {args.idle_seconds:g} s: RSS {rss_before} kB -> "
                  f"{rss_kb(daemon.pid)} kB, CPU {cpu:.2f} s = "
                  f"{cpu * 3600 / args.idle_seconds:.1f} s per hour; "
                  f"{execs} execs by other processes on the machine meanwhile")  # fmt: skip
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)


if __name__ == "__main__":
    main()
