"""`nonstopctl`: the host agent's command line, flags named after kcarectl's.

This module only assembles the action flags of each area and runs the chosen
one; the areas own their behaviour.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nonstop import __version__
from nonstop.agent import kernel_commands, lib_commands, online_commands
from nonstop.agent.actions import Action, AgentArea, AgentContext, AgentError
from nonstop.agent.config import ConfigError, load_config
from nonstop.agent.state import StateError
from nonstop.bundle.errors import BundleError
from nonstop.console import fail

TOOL = "nonstopctl"
AREAS: list[AgentArea] = [kernel_commands, lib_commands, online_commands]


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


def build_parser(areas: Sequence[AgentArea]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=TOOL, description="nonstop live patching: host agent")
    parser.add_argument("--version", action="version", version=f"{TOOL} {__version__}")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--config", type=Path, metavar="FILE", help="agent configuration file")
    # Options shared by several areas (kernel and userspace both take local bundles).
    parser.add_argument(
        "--bundle", type=Path, metavar="FILE", help="apply this local bundle (air-gapped use)"
    )
    parser.add_argument(
        "--pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="limit userspace commands to this process (repeatable)",
    )
    commands = parser.add_argument_group("commands (exactly one)")
    exclusive = commands.add_mutually_exclusive_group(required=True)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(AREAS).parse_args(argv)
    chosen: tuple[Action, str | None] = args.chosen
    action, value = chosen
    try:
        context = AgentContext(
            args=args, config=load_config(args.config), json=args.json, value=value
        )
        return action.run(context)
    except (AgentError, ConfigError, BundleError, StateError) as exc:
        fail(TOOL, str(exc), getattr(exc, "exit_code", 1))
