"""API v1 routers. ``ROUTERS`` lists them in the order the app mounts them.

A later router (the web dashboard) is one more module here and one more entry
in ``ROUTERS``; it reuses ``deps`` for authentication and the service modules
of ``nonstop.server`` for everything else.
"""

from __future__ import annotations

from fastapi import APIRouter

from nonstop.server.api import (
    admin_bundles,
    admin_feeds,
    admin_hosts,
    admin_keys,
    admin_reports,
    host_routes,
    ops,
    vulnerability_routes,
)

ROUTERS: list[APIRouter] = [
    ops.router,
    host_routes.router,
    admin_keys.router,
    admin_bundles.router,
    admin_feeds.router,
    admin_hosts.router,
    admin_reports.router,
    vulnerability_routes.router,
]
