"""`nonstop build userspace`: the command line of the userspace builder, and its output."""

from __future__ import annotations

import argparse
from pathlib import Path

from nonstop.builders.errors import BuilderError
from nonstop.builders.userspace.builder import build_userspace
from nonstop.builders.userspace.recipe import load_recipe
from nonstop.builders.userspace.report import render_json, render_text
from nonstop.bundle import load_signing_key
from nonstop.bundle.keys import PRIVATE_KEY_NAME
from nonstop.console import fail, stderr, stdout


def register_build(builders: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = builders.add_parser(
        "userspace", help="build cumulative bundles for a shared library from a recipe"
    )
    parser.add_argument("recipe", type=Path, metavar="RECIPE.toml")
    parser.add_argument("--key", type=Path, required=True, help="signing.key (or its directory)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("--report", metavar="FILE|-", help="write a report (- for stdout)")
    parser.add_argument("--report-format", choices=["text", "json"], default="text")
    parser.add_argument("--work", type=Path, metavar="DIR", help="keep build trees and logs here")
    parser.set_defaults(handler=cmd_build_userspace)


def cmd_build_userspace(args: argparse.Namespace) -> int:
    """``nonstop build userspace``: exit status 0 if every level was built, else 1.

    Levels below the first refused one keep their bundles. A BuilderError ends
    in a one-line error. With ``--report -`` the report is the only thing on
    stdout; the summary then goes to stderr.
    """
    key_path = args.key / PRIVATE_KEY_NAME if args.key.is_dir() else args.key
    key = load_signing_key(key_path)
    try:
        recipe = load_recipe(args.recipe)
        result = build_userspace(recipe, key, args.output, work=args.work)
    except BuilderError as exc:
        fail("nonstop build userspace", str(exc))
    text = render_json(result) if args.report_format == "json" else render_text(result)
    if args.report == "-":
        print(text, end="")
    elif args.report:
        Path(args.report).write_text(text)
    console = stderr if args.report == "-" else stdout  # keep a report on stdout parseable
    console.print(result.reproduction.describe(), markup=False)
    for level in result.levels:
        if level.status == "built":
            console.print(f"level {level.level}: wrote {level.bundle}", markup=False)
        else:
            reasons = "; ".join(str(r) for r in level.refusals) or level.note
            console.print(f"level {level.level}: {level.status.upper()}: {reasons}", markup=False)
    return 0 if result.ok else 1
