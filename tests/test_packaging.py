"""What a host installs: the agent without the patch server's or the Debian builder's stack.

A real install of this checkout into a fresh virtualenv (`pip install .[agent]`), as a
host would get it: the server's and the builder's dependencies are not there, the agent
works, and the commands that need them say which extra installs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_AND_BUILDER_STACK = {
    "fastapi",
    "uvicorn",
    "pydantic",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg-pool",
    "prometheus-client",
    "python-debian",
    "unidiff",
    "swagger-ui-bundle",
}


@pytest.fixture(scope="module")
def agent_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("agent-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{ROOT}[agent]"],
        check=True,
        cwd=venv.parent,
    )
    return venv / "bin"


def _run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, check=False, cwd=binary.parent
    )


def test_the_agent_install_has_no_server_or_builder_stack(agent_install: Path) -> None:
    listed = _run(agent_install / "python", "-m", "pip", "list", "--format=json")
    names = {entry["name"].lower() for entry in json.loads(listed.stdout)}
    assert "nonstop" in names and "cryptography" in names
    assert not names & SERVER_AND_BUILDER_STACK, names & SERVER_AND_BUILDER_STACK


def test_the_agent_works_and_the_rest_names_its_extra(agent_install: Path, tmp_path: Path) -> None:
    version = _run(agent_install / "nonstopctl", "--version", "--json")
    assert version.returncode == 0 and json.loads(version.stdout)["version"]
    if os.geteuid() == 0:
        info = _run(agent_install / "nonstopctl", "--info", "--json")
        assert info.returncode == 0 and "kernel" in json.loads(info.stdout), info.stderr
    keys = _run(agent_install / "nonstop", "keys", "generate", "--out", str(tmp_path / "keys"))
    assert keys.returncode == 0 and (tmp_path / "keys" / "signing.pub").exists()
    for argv, extra in ((["serve"], "server"), (["db", "upgrade"], "server"),
                        (["build", "kernel", "recipe.toml"], "build")):  # fmt: skip
        done = _run(agent_install / "nonstop", *argv)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().startswith(f"nonstop: error: nonstop {argv[0]} needs the ")
        assert f"pip install 'nonstop[{extra}]'" in done.stderr
