"""`nonstop`: the vendor and admin tool (keys, bundles, builders, patch server, demo).

Each part registers its own sub-commands; this module only assembles them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from nonstop import __version__
from nonstop.builders import cli as build_cli
from nonstop.bundle import cli as bundle_cli
from nonstop.bundle.errors import BundleError
from nonstop.console import fail
from nonstop.demo import story as demo
from nonstop.server import cli as server_cli

TOOL = "nonstop"
COMMAND_GROUPS = [bundle_cli, build_cli, server_cli, demo]


def build_parser() -> argparse.ArgumentParser:
    """The ``nonstop`` parser; every command sets ``handler``, which returns the exit status."""
    parser = argparse.ArgumentParser(prog=TOOL, description="nonstop live patching: admin tool")
    parser.add_argument("--version", action="version", version=f"{TOOL} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
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
