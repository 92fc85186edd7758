"""Run nonstopctl as user nobody (65534), the way an operator without root would.

The test interpreter may live where nobody cannot read it (a pyenv build under
/root); the system's Python of the same version then runs the agent from this
checkout's source tree. Up to the root check, nonstopctl imports only the
standard library and its own modules, which is also what this proves.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nonstop

SETPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SOURCE = str(Path(nonstop.__file__).resolve().parent.parent)
MAIN = "from nonstop.agent.cli import main; raise SystemExit(main())"


@functools.cache
def interpreter() -> str:
    """A Python that user nobody can run and that imports nonstop from this checkout."""
    if shutil.which("setpriv") is None:
        pytest.skip(reason="setpriv (util-linux) not installed")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}"):
        probe = subprocess.run(
            [*SETPRIV, "env", f"PYTHONPATH={SOURCE}", candidate, "-c", "import nonstop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    pytest.skip(reason=f"no {version} that user nobody can run is installed")


def nonstopctl_as_nobody(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SETPRIV, interpreter(), "-c", MAIN, *args],
        env={**env, "PYTHONPATH": SOURCE},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
