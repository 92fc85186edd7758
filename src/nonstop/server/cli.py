"""`nonstop serve`, `nonstop db upgrade|current`, `nonstop admin token create|list|revoke`."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from nonstop.console import emit_json, fail, stdout
from nonstop.server import admin_tokens, logs, migrate
from nonstop.server.auth import SCOPES, ScopeError
from nonstop.server.cli_common import (
    TOOL,
    add_database_options,
    database_failed,
    open_database,
    private_files,
    ready_database,
)
from nonstop.server.db import Database, redact_url
from nonstop.server.settings import (
    SETTINGS_ENV,
    ServerSettings,
    SettingsError,
    parse_listen,
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve``, ``db`` and ``admin`` subcommands; each sets ``handler`` (a ``cmd_*``)."""
    serve = commands.add_parser("serve", help="run the patch server (API v1)")
    add_database_options(serve)
    serve.add_argument("--listen", default="127.0.0.1:8740", metavar="HOST:PORT")
    serve.add_argument(
        "--vendor-keys",
        metavar="DIR",
        default="",
        help="vendor public keys (*.pub) uploads must verify against "
        "(default DATA_DIR/vendor-keys)",
    )
    serve.add_argument(
        "--blob-store",
        choices=["directory", "database"],
        default="directory",
        help="where bundle bytes live (database: for stateless replicas)",
    )
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    serve.add_argument(
        "--registrations-per-minute",
        type=int,
        default=60,
        metavar="N",
        help="per client address and process; 0 disables",
    )
    serve.add_argument(
        "--failed-auth-per-minute",
        type=int,
        default=30,
        metavar="N",
        help="failed authentications per client address and per credential, per process; "
        "0 disables",
    )
    serve.add_argument(
        "--max-request-bytes",
        type=int,
        default=2 * 1024 * 1024,
        metavar="N",
        help="largest request body except bundle uploads",
    )
    serve.add_argument(
        "--max-bundle-bytes",
        type=int,
        default=64 * 1024 * 1024,
        metavar="N",
        help="largest bundle upload",
    )
    serve.add_argument("--stale-after-days", type=int, default=7, metavar="DAYS")
    serve.add_argument(
        "--checkin-interval",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="check-in interval the server asks agents to keep",
    )
    serve.add_argument(
        "--checkin-history-days",
        type=int,
        default=30,
        metavar="DAYS",
        help="how long check-in records are kept",
    )
    serve.add_argument(
        "--catalog-ttl",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long a process caches bundles and feeds for check-ins",
    )
    serve.add_argument(
        "--db-pool-size", type=int, default=10, metavar="N", help="database connections per process"
    )
    serve.add_argument(
        "--threads", type=int, default=8, metavar="N", help="request handler threads per process"
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        default="",
        metavar="IPS",
        help="trust X-Forwarded-For from these proxies (comma-separated)",
    )
    serve.add_argument("--no-access-log", action="store_true")
    serve.set_defaults(handler=cmd_serve)

    db = commands.add_parser("db", help="server database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = db_sub.add_parser("upgrade", help="upgrade the schema to this version's newest")
    add_database_options(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)
    current = db_sub.add_parser("current", help="show the schema revision")
    add_database_options(current)
    current.add_argument("--json", action="store_true")
    current.set_defaults(handler=cmd_db_current)

    admin = commands.add_parser("admin", help="server administration")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    token = admin_sub.add_parser("token", help="admin API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = token_sub.add_parser("create", help="create a token (printed once)")
    add_database_options(create)
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        dest="scopes",
        help=f"repeatable: {', '.join(SCOPES)}, or * for all",
    )
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=cmd_token_create)
    listing = token_sub.add_parser("list", help="list tokens (never their secrets)")
    add_database_options(listing)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_token_list)
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    add_database_options(revoke)
    revoke.add_argument("token_id")
    revoke.set_defaults(handler=cmd_token_revoke)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until it is stopped.

    An empty database gets the schema; one at another revision, or not nonstop's, exits
    with a one-line error (``nonstop db upgrade`` is the operator's step). Several
    ``--workers`` read the settings from ``SETTINGS_ENV`` and sum their metrics through a
    temporary ``PROMETHEUS_MULTIPROC_DIR``, removed on exit.
    """
    try:
        host, port = parse_listen(args.listen)
        settings = ServerSettings(
            data_dir=args.data_dir,
            database_url=args.database_url,
            vendor_keys_dir=args.vendor_keys,
            blob_store=args.blob_store,
            host=host,
            port=port,
            workers=args.workers,
            max_request_bytes=args.max_request_bytes,
            max_bundle_bytes=args.max_bundle_bytes,
            registrations_per_minute=args.registrations_per_minute,
            failed_auth_per_minute=args.failed_auth_per_minute,
            stale_after_days=args.stale_after_days,
            checkin_interval_seconds=args.checkin_interval,
            checkin_history_days=args.checkin_history_days,
            catalog_ttl_seconds=args.catalog_ttl,
            db_pool_size=args.db_pool_size,
            threads=args.threads,
            access_log=not args.no_access_log,
            forwarded_allow_ips=args.forwarded_allow_ips,
        )
    except SettingsError as exc:
        fail(TOOL, str(exc))
    private_files()
    logs.configure()
    log = logs.logger()
    database = Database(settings.effective_database_url, pool_size=1)
    try:
        if migrate.prepare_for_serving(database.engine):
            log.info(
                "empty database: schema created",
                extra={"fields": {"revision": migrate.head_revision()}},
            )
    except migrate.DatabaseNotReadyError as exc:
        fail(TOOL, str(exc))
    except SQLAlchemyError as exc:
        fail(
            TOOL,
            f"cannot use database {redact_url(settings.effective_database_url)}: "
            f"{exc.__class__.__name__}",
        )
    finally:
        database.dispose()
    log.info(
        "starting",
        extra={
            "fields": {
                "database": redact_url(settings.effective_database_url),
                "listen": args.listen,
                "workers": settings.workers,
            }
        },
    )
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "backlog": 4096,
        # Longer than a load balancer's idle timeout (often 60 s), so the balancer closes
        # idle connections first and never sends a request into one being closed here.
        "timeout_keep_alive": 75,
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
    }
    if settings.workers == 1:
        from nonstop.server.app import create_app

        uvicorn.run(create_app(settings, owns_process=True), **options)  # type: ignore[arg-type]
        return 0
    # Workers import the app by name and read their settings from the environment;
    # their metrics are summed through files in a directory private to this run.
    metrics_dir = tempfile.mkdtemp(prefix="nonstop-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[SETTINGS_ENV] = settings.to_json()
    try:
        uvicorn.run(
            "nonstop.server.app:app_from_environment",
            factory=True,
            workers=settings.workers,
            **options,  # type: ignore[arg-type]
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Upgrade the schema to this version's newest revision and print before -> after."""
    database = open_database(args)
    try:
        before = migrate.current_revision(database.engine)
        after = migrate.upgrade(database.engine)
    except SQLAlchemyError as exc:
        database_failed("upgrade", database, exc)
    finally:
        database.dispose()
    stdout.print(
        f"database {redact_url(database.url)}: revision {before or '(empty)'} -> {after}",
        markup=False,
    )
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    """Print the database's schema revision (``(empty)``: none) and the newest one."""
    database = open_database(args)
    try:
        current = migrate.current_revision(database.engine)
    except SQLAlchemyError as exc:
        database_failed("read", database, exc)
    finally:
        database.dispose()
    head = migrate.head_revision()
    if args.json:
        emit_json({"current": current, "head": head})
    else:
        stdout.print(f"current {current or '(empty)'}, newest {head}", markup=False)
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    """Create an admin token and print its secret, the only time it is shown.

    Like every ``admin token`` command it creates the schema on an empty database and
    refuses one at another revision.
    """
    database = ready_database(args)
    try:
        with database.engine.begin() as connection:
            token_id, token, scopes = admin_tokens.create(connection, args.name, args.scopes)
    except ScopeError as exc:
        fail(TOOL, str(exc))
    finally:
        database.dispose()
    if args.json:
        emit_json({"id": token_id, "name": args.name, "scopes": scopes, "token": token})
    else:
        stdout.print(
            f"admin token {token_id} ({args.name}): scopes {' '.join(scopes)}", markup=False
        )
        stdout.print("token (shown only now; store it safely):", markup=False)
        stdout.print(token, markup=False)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    """List admin tokens, revoked ones included, never their secrets."""
    database = ready_database(args)
    try:
        with database.engine.connect() as connection:
            tokens = admin_tokens.listing(connection)
    finally:
        database.dispose()
    if args.json:
        emit_json(tokens)
        return 0
    for token in tokens:
        state = "revoked" if token["revoked_at"] else "active"
        stdout.print(
            f"{token['id']}  {state:8} {token['name']}: {' '.join(token['scopes'])}", markup=False
        )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke an admin token; exit 1 if no active token has this id."""
    database = ready_database(args)
    try:
        with database.engine.begin() as connection:
            revoked = admin_tokens.revoke(connection, args.token_id)
    finally:
        database.dispose()
    if not revoked:
        fail(TOOL, f"no active admin token {args.token_id}")
    stdout.print(f"admin token {args.token_id} revoked", markup=False)
    return 0
