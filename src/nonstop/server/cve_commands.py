"""``nonstop cve import FILE...`` and ``nonstop cve sync``: vulnerability feeds into the database.

Import reads every file whole first (``nonstop.cve.feeds``) and stores them
in one transaction, so a malformed file anywhere stores nothing. Sync
downloads each configured feed URL only if it changed since the last sync
(If-Modified-Since, If-None-Match), imports what changed, and with
``--changelogs`` also reads, for the source packages the fleet has, the
changelog of the newest version in this machine's Debian archive.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from nonstop.console import emit_json, fail, stdout
from nonstop.cve.batch import FeedBatch
from nonstop.cve.errors import FeedError
from nonstop.cve.feeds import read_feed
from nonstop.server import advisories, feed_sync
from nonstop.server.cli_common import TOOL, add_database_options, database_failed, ready_database

FEEDS_ENV = "NONSTOP_CVE_FEEDS"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``nonstop cve import`` and ``nonstop cve sync``."""
    cve = commands.add_parser("cve", help="vulnerability feeds of the patch server")
    sub = cve.add_subparsers(dest="cve_command", required=True, metavar="COMMAND")
    load = sub.add_parser(
        "import", help="load feed files: the Debian security tracker's JSON, OSV records or zips"
    )
    add_database_options(load)
    load.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _add_release_option(load)
    load.add_argument("--json", action="store_true")
    load.set_defaults(handler=cmd_import)
    sync = sub.add_parser("sync", help="download the feed URLs that changed and import them")
    add_database_options(sync)
    sync.add_argument(
        "--url",
        action="append",
        dest="urls",
        default=os.environ.get(FEEDS_ENV, "").split(),
        help=f"a feed URL (repeatable); env {FEEDS_ENV} (space-separated)",
    )
    sync.add_argument(
        "--changelogs",
        action="store_true",
        help="also read the newest changelog in this machine's Debian archive of each source "
        "package the fleet has installed",
    )
    _add_release_option(sync)
    sync.add_argument("--json", action="store_true")
    sync.set_defaults(handler=cmd_sync)


def _add_release_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--release",
        action="append",
        dest="releases",
        metavar="RELEASE",
        help="keep only this release's records, e.g. debian:12 (repeatable; default all)",
    )


def cmd_import(args: argparse.Namespace) -> int:
    """Read every file whole, then store them all in one transaction."""
    batches = []
    for path in args.files:
        try:
            batches.append(read_feed(path, args.releases))
        except FeedError as exc:
            fail(TOOL, f"nothing imported: {path}: {exc}")
    database = ready_database(args)
    try:
        with database.engine.begin() as connection:
            for batch in batches:
                advisories.store(connection, batch, args.releases)
    except SQLAlchemyError as exc:
        database_failed("import into", database, exc)
    finally:
        database.dispose()
    _report(args, [(str(path), batch) for path, batch in zip(args.files, batches, strict=True)])
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Download and import each changed feed; exit 1 if any feed failed (the others are kept)."""
    if not args.urls and not args.changelogs:
        fail(TOOL, f"no feed to sync: give --url URL or --changelogs (or set {FEEDS_ENV})", 64)
    database = ready_database(args)
    failures = 0
    imported: list[tuple[str, FeedBatch]] = []
    try:
        for url in args.urls:
            outcome = feed_sync.sync_url(database, url, args.releases)
            if outcome.error:
                failures += 1
                stdout.print(f"{outcome.shown_url}: error: {outcome.error}", markup=False)
            elif outcome.batch is None:
                stdout.print(f"{outcome.shown_url}: not modified", markup=False)
            else:
                imported.append((outcome.shown_url, outcome.batch))
        if args.changelogs:
            for source, batch, error in feed_sync.sync_changelogs(database, args.data_dir):
                if error:
                    failures += 1
                    stdout.print(f"changelog of {source}: error: {error}", markup=False)
                elif batch is not None:
                    imported.append((f"changelog of {source}", batch))
    except SQLAlchemyError as exc:
        database_failed("sync into", database, exc)
    finally:
        database.dispose()
    _report(args, imported)
    return 1 if failures else 0


def _report(args: argparse.Namespace, batches: Sequence[tuple[str, FeedBatch]]) -> None:
    if args.json:
        emit_json(
            [
                {
                    "from": name,
                    "feed": batch.feed,
                    "advisories": len(batch.advisories),
                    "records": batch.records,
                    "skipped": batch.skipped,
                }
                for name, batch in batches
            ]
        )
        return
    for name, batch in batches:
        stdout.print(f"{name}: {batch.summary()}", markup=False)
