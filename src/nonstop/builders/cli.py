"""`nonstop build ...`: the command group every builder adds a sub-command to.

A builder module exposes ``register_build(build_subparsers)``; adding a
builder is one line in BUILDERS.
"""

from __future__ import annotations

import argparse

from nonstop.builders.debian import command as debian_command
from nonstop.builders.kernel import builder as kernel_builder
from nonstop.builders.userspace import command as userspace_command

BUILDERS = [kernel_builder, userspace_command, debian_command]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    build = commands.add_parser("build", help="build signed patch bundles from source fixes")
    builders = build.add_subparsers(dest="build_command", required=True, metavar="TARGET")
    for builder in BUILDERS:
        builder.register_build(builders)
