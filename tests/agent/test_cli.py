"""nonstopctl's command line as an operator meets it: strict options, exit statuses that never
mix answers with errors, one line per error, and a clear refusal without root.

Each runs the real nonstopctl as a process (root for the commands that go past the root
check; user nobody through setpriv for the refusals)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.agent.conftest import Agent
from tests.agent.unprivileged import nonstopctl_as_nobody

EXIT_USAGE, EXIT_ERROR, EXIT_NOT_ROOT = 64, 5, 77
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="nonstopctl's commands need root")


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single error line (no traceback, nothing on stdout)."""
    assert done.stdout == "" and done.stderr.count("\n") == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("nonstopctl: error: ")
    return done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--freezer"], "unknown option --freezer"),
        (["--set-patch-type", "x"], "unknown option --set-patch-type"),
        (["--upd"], "unknown option --upd"),  # no abbreviations of --update
        (["--lib-upd"], "unknown option --lib-upd"),
        (["--status", "--json", "--jso"], "unknown option --jso"),
        ([], "no command given"),
        (["--json"], "no command given"),
        (["--status", "now"], "unexpected argument 'now'"),
        (["--status", "--check"], "not allowed with argument"),
        (["--lib-info", "--bundle", "x.nsb"], "--lib-info does not take --bundle"),
        (["--update", "--pid", "1"], "--update does not take --pid"),
        (["--status", "--server", "http://x"], "--status does not take --server"),
        (["--register", "k", "--strict"], "--register does not take --strict"),
        (["--update", "--bundle", "x.nsb", "--allow-downgrade"], "--update does not take"),
        (["--lib-update", "--pid", "-5"], "-5 is not a process id"),
        (["--lib-update", "--pid", "one"], "'one' is not a process id"),
        (["--version", "--status"], "--version does not go with --status"),
    ],
)
def test_usage_errors_name_the_problem_and_exit_with_the_usage_code(
    agent: Agent, argv: list[str], message: str
) -> None:
    done = agent.run(*argv)
    assert done.returncode == EXIT_USAGE
    assert message in one_error_line(done)


def test_version_honours_json(agent: Agent) -> None:
    from nonstop import __version__

    assert agent.json("--version") == {"tool": "nonstopctl", "version": __version__}
    text = agent.run("--version")
    assert (text.returncode, text.stdout) == (0, f"nonstopctl {__version__}\n")


@needs_root
def test_a_process_that_does_not_exist_is_an_error(agent: Agent, bundles) -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()  # reaped: its pid names no process now
    gone = str(finished.pid)
    for argv in (
        ["--lib-update", "--bundle", str(bundles[1]), "--pid", gone],
        ["--lib-unload", "--pid", gone],
        ["--lib-info", "--pid", gone],
    ):
        done = agent.run(*argv)
        assert done.returncode == EXIT_ERROR
        assert f"--pid {gone}: no such process" in one_error_line(done)


@needs_root
def test_allow_downgrade_needs_a_bundle(agent: Agent) -> None:
    done = agent.run("--lib-update", "--allow-downgrade")
    assert done.returncode == EXIT_USAGE
    assert "--allow-downgrade needs --bundle FILE" in one_error_line(done)


@pytest.mark.parametrize(
    "argv",
    [
        ["--enable-lib"],
        ["--disable-lib"],
        ["--set-sticky-patch", "3"],
        ["--lib-info"],
        ["--lib-update", "--bundle", "x.nsb"],
        ["--status"],
        ["--check"],
        ["--server-info"],
        ["--auto-update"],
        ["--info"],
        ["--doctor"],
        ["--license-info"],
    ],
)
def test_without_root_every_command_says_it_needs_root(agent: Agent, argv: list[str]) -> None:
    done = nonstopctl_as_nobody(agent.env, *argv)
    assert done.returncode == EXIT_NOT_ROOT
    assert f"nonstopctl: error: {argv[0]} needs root" in one_error_line(done)


@needs_root
def test_unsetting_the_sticky_flag_gives_the_config_files_pin_back(agent: Agent) -> None:
    agent.configure(sticky="level:2")
    assert agent.json("--set-sticky-patch", "1") == {"sticky": "level:1", "source": "flag"}
    settings = json.loads((agent.state / "settings.json").read_text())
    assert settings["sticky"] == "level:1"
    unset = agent.run("--set-sticky-patch", "")
    assert unset.returncode == 0
    assert "the configuration file's sticky = level:2 applies" in unset.stdout
    document = agent.json("--set-sticky-patch", "")
    assert document == {"sticky": "level:2", "source": str(agent.config)}
    assert "sticky" not in json.loads((agent.state / "settings.json").read_text())
    assert agent.json("--doctor")["configuration"]["sticky"] == "level:2"
