"""The build's own check of every bundle it reports as built: loaded into a real process.

A fresh Python process (standard library only) loads the archive's library
(the ``--from`` file unpacked from its .deb, not the system's copy) and
answers on a pipe. The engine applies the bundle, the process must still
answer, the engine reverts it, the process must answer again and then exit
cleanly. It proves the patch links against the archive's exact binary, its
entry sites validate, and switching in both directions leaves the process
alive; what the changed functions do is for the package's own tests to say.
"""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

from nonstop.bundle import TrustedKeys, open_bundle
from nonstop.bundle.errors import BundleError
from nonstop.bundle.keys import PublicKey
from nonstop.userspace import Engine, EngineError
from nonstop.userspace.bundles import spec_from_bundle

_HOLDER = """
import ctypes, sys
ctypes.CDLL(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    print("alive", flush=True)
"""
_ANSWER_SECONDS = 10


def smoke_test(library: Path, bundle: Path, key: PublicKey) -> str | None:
    """None when BUNDLE applied to and reverted from a process using LIBRARY; else why not."""
    try:
        loaded = open_bundle(bundle, TrustedKeys([key]))
        spec = spec_from_bundle(loaded)
    except (BundleError, EngineError) as exc:
        return f"the bundle does not open: {exc}"
    holder = subprocess.Popen(
        [sys.executable, "-S", "-c", _HOLDER, str(library)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if not _answers(holder, "ready"):
            return f"a process could not load {library.name}: {_stderr(holder)}"
        engine = Engine()
        applied = engine.apply(holder.pid, spec)
        if applied.result != "patched":
            return f"applying level {spec.level} failed: {applied.result}: {applied.reason}"
        if not _answers(holder, "alive", ask=True):
            return f"the process stopped answering after level {spec.level} was applied"
        reverted = engine.revert(holder.pid, spec.build_id)
        if reverted.result != "reverted":
            return f"reverting level {spec.level} failed: {reverted.result}: {reverted.reason}"
        if not _answers(holder, "alive", ask=True):
            return "the process stopped answering after the level was reverted"
        assert holder.stdin is not None
        holder.stdin.close()
        status = holder.wait(_ANSWER_SECONDS)
        if status != 0:
            return f"the process exited with status {status} after the level was reverted"
        return None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def _answers(holder: subprocess.Popen[str], expected: str, ask: bool = False) -> bool:
    assert holder.stdin is not None and holder.stdout is not None
    try:
        if ask:
            holder.stdin.write("ping\n")
            holder.stdin.flush()
        ready, _, _ = select.select([holder.stdout], [], [], _ANSWER_SECONDS)
        return bool(ready) and holder.stdout.readline().strip() == expected
    except (BrokenPipeError, OSError):
        return False


def _stderr(holder: subprocess.Popen[str]) -> str:
    holder.kill()
    _, err = holder.communicate()
    lines = err.strip().splitlines()
    return lines[-1] if lines else f"status {holder.returncode}"
