"""How `nonstopctl` areas (userspace, kernel, online) plug their flags into the CLI.

kcarectl-style: every command is a flag (`--lib-update`, `--info`, ...) and
exactly one is given per call. Each area module exposes ``ACTIONS`` and
``add_options(parser)``; `nonstop.agent.cli` assembles them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from nonstop.agent.config import AgentConfig
from nonstop.agent.state import StateStore
from nonstop.console import emit_json, stdout

if TYPE_CHECKING:  # loaded by the commands that verify bundles (cryptography is slow to import)
    from nonstop.agent.bundle_cache import BundleCache
    from nonstop.bundle import TrustedKeys


# Exit statuses (docs/agent.md). Answers (0-3) and errors (4 and up) never share a code,
# so a script never reads a failure as `--check`'s "no" or a `--status` state.
EXIT_OK = 0
EXIT_NO = 1
"""`--check`: no newer patch; `--status`: no patches for this host."""
EXIT_SERVER = 4
"""No usable answer from a patch server (not registered, unreachable, refused, garbage)."""
EXIT_ERROR = 5
"""A local error: a refused bundle, a bad value, an unreadable state file, no such process."""
EXIT_PARTIAL = 6
"""An update ran but some process (or the kernel) did not end at the level (busy, refused)."""
EXIT_USAGE = 64
"""Bad command line: unknown option, no command, an option the command does not take."""
EXIT_NOT_ROOT = 77
"""The command needs root."""


class AgentError(Exception):
    """A command cannot be carried out; the message says why in one line."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class AgentContext:
    """Everything one nonstopctl command runs with: its flags and effective configuration."""

    args: argparse.Namespace
    config: AgentConfig
    json: bool
    value: str | None
    """The argument of the action flag itself, for flags like ``--register KEY``."""

    def trusted_keys(self) -> TrustedKeys:
        """The keys bundles must be signed with, read from the directory anew on each call.

        KeyFileError (a BundleError) when the directory is missing or a key file is bad.
        """
        from nonstop.bundle import TrustedKeys

        return TrustedKeys.from_dir(self.config.trusted_keys_dir)

    @property
    def state(self) -> StateStore:
        return StateStore(self.config.state_dir)

    @property
    def bundle_cache(self) -> BundleCache:
        from nonstop.agent.bundle_cache import BundleCache

        return BundleCache(self.config.cache_dir)

    def output(self, document: dict[str, Any], lines: list[str]) -> int:
        """Print the command's answer: DOCUMENT as one JSON document under --json, otherwise
        LINES of text; 0, the exit status of an answer given."""
        if self.json:
            emit_json(document)
        else:
            for line in lines:
                stdout.print(line, markup=False)
        return 0


@dataclass(frozen=True)
class Action:
    """One command flag of ``nonstopctl``: RUN returns the exit status (``EXIT_*``)."""

    flag: str
    help: str
    run: Callable[[AgentContext], int]
    metavar: str | None = None
    """Set when the flag takes a value (``--register KEY``)."""
    options: frozenset[str] = frozenset()
    """The options this command takes besides --json and --config; any other is refused."""


class AgentArea(Protocol):
    """What ``cli`` needs from an area module: its command flags and its extra options."""

    ACTIONS: list[Action]

    def add_options(self, parser: argparse.ArgumentParser) -> None: ...


def require_root(what: str) -> None:
    """AgentError with EXIT_NOT_ROOT unless the effective uid is 0; WHAT names the command."""
    if os.geteuid() != 0:
        raise AgentError(f"{what} needs root (run it as root, e.g. with sudo)", EXIT_NOT_ROOT)
