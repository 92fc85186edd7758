"""`nonstopctl`: the host agent's command line, flags named after kcarectl's.

This module only assembles the action flags of each area and runs the chosen
one; the areas own their behaviour. The command line is strict: no
abbreviations, an unknown option is named as such, and an option the chosen
command does not take is refused rather than ignored. Every usage error exits
``EXIT_USAGE``, a code no answer uses (docs/agent.md has the table).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from nonstop import __version__
from nonstop.agent import (
    kernel_commands,
    lib_commands,
    online_commands,
    support_commands,
    vulnerability_commands,
)
from nonstop.agent.actions import (
    EXIT_ERROR,
    EXIT_USAGE,
    Action,
    AgentArea,
    AgentContext,
    AgentError,
    require_root,
)
from nonstop.agent.config import ConfigError, load_config
from nonstop.agent.state import StateError
from nonstop.bundle.errors import BundleError
from nonstop.console import emit_json, fail, stdout

TOOL = "nonstopctl"
AREAS: list[AgentArea] = [
    kernel_commands,
    lib_commands,
    online_commands,
    vulnerability_commands,
    support_commands,
]
GLOBAL_OPTIONS = frozenset({"--json", "--config", "--help"})


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line and ``EXIT_USAGE`` (argparse says 2)."""

    def error(self, message: str) -> NoReturn:
        fail(TOOL, f"{message} (see nonstopctl --help)", EXIT_USAGE)


class _Choose(argparse.Action):
    """Records which action flag was given, with its value if it takes one."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        value = values[0] if isinstance(values, list) and values else None
        namespace.chosen = (self.const, value)


def _pid(text: str) -> int:
    try:
        pid = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process id") from None
    if pid <= 0:
        raise argparse.ArgumentTypeError(f"{pid} is not a process id (must be positive)")
    return pid


def build_parser(areas: Sequence[AgentArea]) -> argparse.ArgumentParser:
    """The parser with every area's flags as one mutually exclusive group (argparse's own
    check that only one command is given); its errors exit EXIT_USAGE in one line.
    """
    parser = _Parser(prog=TOOL, description="nonstop live patching: host agent", allow_abbrev=False)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--config", type=Path, metavar="FILE", help="agent configuration file")
    # Options shared by several areas (kernel and userspace both take local bundles).
    parser.add_argument(
        "--bundle", type=Path, metavar="FILE", help="apply this local bundle (air-gapped use)"
    )
    parser.add_argument(
        "--pid",
        type=_pid,
        action="append",
        default=[],
        metavar="PID",
        help="limit userspace commands to this process (repeatable)",
    )
    commands = parser.add_argument_group("commands (exactly one)")
    exclusive = commands.add_mutually_exclusive_group()
    for area in areas:
        for action in area.ACTIONS:
            exclusive.add_argument(
                action.flag,
                action=_Choose,
                const=action,
                nargs=1 if action.metavar else 0,
                metavar=action.metavar,
                help=action.help,
            )
        area.add_options(parser)
    return parser


def _options_given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The options on the command line, as argparse reads them (a token that names an
    option is that option, never another option's value; ``--`` ends options)."""
    given = set()
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        if name in parser._option_string_actions:
            given.add(name)
    return given


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Action | None, str | None]:
    """The parsed command line, its action (None: --version) and the action's value;
    a usage error exits."""
    parser = build_parser(AREAS)
    args, extra = parser.parse_known_args(argv)
    unknown = [token for token in extra if token.startswith("-")]
    if unknown:
        parser.error(f"unknown option {unknown[0]}")
    if extra:
        parser.error(f"unexpected argument {extra[0]!r}")
    if args.version and _options_given(parser, argv) <= {"--version", "--json"}:
        return args, None, None
    chosen: tuple[Action, str | None] | None = getattr(args, "chosen", None)
    if chosen is None:
        parser.error("no command given: choose one, e.g. --status or --lib-info")
    action, value = chosen
    if args.version:
        parser.error(f"--version does not go with {action.flag}")
    allowed = GLOBAL_OPTIONS | action.options | {action.flag}
    stray = sorted(_options_given(parser, argv) - allowed)
    if stray:
        parser.error(f"{action.flag} does not take {stray[0]}")
    return args, action, value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ARGV (default: sys.argv[1:]) and return its exit status.

    Every command but --version needs root. A usage error or an expected failure (AgentError,
    ConfigError, BundleError, StateError) exits through SystemExit with one line on
    stderr and its exit code.
    """
    import sys

    args, action, value = parse(sys.argv[1:] if argv is None else argv)
    if action is None:
        if args.json:
            emit_json({"tool": TOOL, "version": __version__})
        else:
            stdout.print(f"{TOOL} {__version__}", markup=False)
        return 0
    try:
        require_root(action.flag)
        for pid in args.pid:
            if not os.path.exists(f"/proc/{pid}"):
                raise AgentError(f"--pid {pid}: no such process")
        context = AgentContext(
            args=args, config=load_config(args.config), json=args.json, value=value
        )
        return action.run(context)
    except (AgentError, ConfigError, BundleError, StateError) as exc:
        fail(TOOL, str(exc), getattr(exc, "exit_code", EXIT_ERROR))
