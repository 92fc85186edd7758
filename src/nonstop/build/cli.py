"""`nonstop build`: the command group under which each builder registers its sub-command."""

from __future__ import annotations

import argparse

from nonstop.build import userspace

BUILDERS = [userspace]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    build = commands.add_parser("build", help="build signed live patches from source fixes")
    kinds = build.add_subparsers(dest="build_command", required=True, metavar="KIND")
    for builder in BUILDERS:
        builder.register(kinds)
