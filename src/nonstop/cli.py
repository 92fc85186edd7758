"""`nonstop`: the vendor and admin tool (keys, bundles, builders, patch server, demo).

Each part registers its own sub-commands; this module only assembles them.
The builders and the server need dependencies that an agent-only install
(``pip install nonstop``, ``nonstop[agent]``) leaves out: without them their
commands are still listed, and say in one line which extra installs them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from nonstop import __version__
from nonstop.bundle.errors import BundleError
from nonstop.console import fail

TOOL = "nonstop"
COMMAND_GROUPS: list[tuple[str, tuple[str, ...], str | None]] = [
    # (module with register(), the commands it adds, the extra its dependencies come with)
    ("nonstop.bundle.cli", ("keys", "bundle"), None),
    ("nonstop.builders.cli", ("build",), "build"),
    ("nonstop.server.cli", ("serve", "db", "admin"), "server"),
    ("nonstop.server.cve_commands", ("cve",), "server"),
    ("nonstop.demo.story", ("demo",), None),
]


def _group(module: str, extra: str | None) -> ModuleType | str:
    """MODULE, or the name of the missing third-party module its EXTRA would install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if extra is None or not missing or missing == "nonstop":
            raise
        return missing


def _missing_part(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    names: tuple[str, ...],
    extra: str,
    missing: str,
) -> None:
    """Register NAMES as commands that only say which extra installs them."""
    message = f"needs the {extra} dependencies: pip install 'nonstop[{extra}]' (no {missing})"
    for name in names:
        parser = commands.add_parser(name, help=f"({message})", add_help=False)
        parser.add_argument("arguments", nargs=argparse.REMAINDER)

        def refuse(args: Any, name: str = name) -> int:
            fail(TOOL, f"nonstop {name} {message}")

        parser.set_defaults(handler=refuse)


def build_parser() -> argparse.ArgumentParser:
    """The ``nonstop`` parser; every command sets ``handler``, which returns the exit status."""
    parser = argparse.ArgumentParser(prog=TOOL, description="nonstop live patching: admin tool")
    parser.add_argument("--version", action="version", version=f"{TOOL} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module, names, extra in COMMAND_GROUPS:
        group = _group(module, extra)
        if isinstance(group, str):
            assert extra is not None
            _missing_part(commands, names, extra, group)
        else:
            group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ARGV names (default: sys.argv) and return its exit status.

    A BundleError a handler lets through becomes a one-line error and status 1;
    argparse exits with status 2 on bad usage.
    """
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except BundleError as exc:
        fail(TOOL, str(exc))
    return code
