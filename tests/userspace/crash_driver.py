"""A patcher that SIGKILLs itself at a chosen instant, to leave a target half-done for real.

    python -m tests.userspace.crash_driver PID (BUNDLE|--revert) TRUSTED_DIR LOCK_DIR EVENT NTH

EVENT is one of the engine's hook events (prepared, injecting, stopped,
site-written, committed, slot-written, switched); the driver dies at its NTH
occurrence (and finishes normally if there is none).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from nonstop.bundle import TrustedKeys, open_bundle
from nonstop.userspace import Engine, EngineOptions
from nonstop.userspace.bundles import spec_from_bundle


def main() -> None:
    pid, bundle, trusted_dir, lock_dir, event, nth = sys.argv[1:7]
    seen = 0

    def hook(name: str, _pid: int) -> None:
        nonlocal seen
        if name == event:
            seen += 1
            if seen == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)

    engine = Engine(EngineOptions(lock_dir=Path(lock_dir), hook=hook))
    if bundle == "--revert":
        result = engine.revert(int(pid))
    else:
        spec = spec_from_bundle(open_bundle(Path(bundle), TrustedKeys.from_dir(Path(trusted_dir))))
        result = engine.apply(int(pid), spec)
    print(result.result, result.reason)


def run(pid: int, what: str, trusted_dir: Path, lock_dir: Path, event: str, nth: int) -> int:
    """Run the driver on PID (WHAT: a bundle path or --revert); its exit status (-9: killed)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.userspace.crash_driver", str(pid), what, str(trusted_dir),
         str(lock_dir), event, str(nth)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    return done.returncode


if __name__ == "__main__":
    main()
