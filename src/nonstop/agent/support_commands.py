"""`nonstopctl` support area: ``--doctor`` and ``--license-info`` (kcarectl's names).

``--doctor`` gathers what a support request needs in one report: versions,
distribution, kernel and its livepatch support, the effective configuration,
the recorded state, whether the patch server answers, and the recent errors.
Each probe that fails is reported in its section (the report itself never
fails): an operator runs it precisely when something is wrong. It prints no
secret: neither the host token nor the registration key.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from typing import Any

from nonstop import __version__
from nonstop.agent import registration
from nonstop.agent.actions import Action, AgentContext


def add_options(parser: argparse.ArgumentParser) -> None:
    """This area has no options of its own."""


def _probe(section: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """SECTION's facts, or the one line saying why they could not be had."""
    try:
        return section()
    except Exception as exc:  # a report must survive any failing probe
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


def _host() -> dict[str, Any]:
    from nonstop.agent.host_info import detect_distro

    distro = detect_distro()
    return {
        "hostname": registration.host_name(),
        "distro": distro.pretty_name,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def _kernel(context: AgentContext) -> dict[str, Any]:
    from nonstop.agent.kernel_levels import manager_for

    manager = manager_for(context)
    info = manager.info()
    return {
        "livepatch_supported": manager.driver.available(),
        "level": info["level"],
        "effective_version": info["effective_version"],
        "crash_guard": info["guard"]["state"],
        "notes": info["notes"],
    }


def _configuration(context: AgentContext) -> dict[str, Any]:
    config = context.config
    keys = config.trusted_keys_dir
    return {
        "file": str(config.source) if config.source else None,
        "server_url": config.server_url,
        "auto_update": config.auto_update,
        "update_delay_hours": config.update_delay_hours,
        "sticky": config.sticky,
        "userspace_enabled": config.userspace_enabled,
        "trusted_keys_dir": str(keys),
        "trusted_keys": len(list(keys.glob("*"))) if keys.is_dir() else 0,
        "state_dir": str(config.state_dir),
        "cache_dir": str(config.cache_dir),
    }


def _state(context: AgentContext) -> dict[str, Any]:
    from nonstop.agent import lib_levels  # imports the engine: only for the commands using it

    known = registration.load(context.state)
    return {
        "registration": known.public_view() if known else None,
        "userspace_levels": {w.build_id: w.level for w in lib_levels.wanted_levels(context.state)},
        "userspace_held_by_operator": lib_levels.held_levels(context.state),
    }


def _server(context: AgentContext) -> dict[str, Any]:
    from nonstop.agent.client import ServerClient, ServerError

    known = registration.load(context.state)
    url = known.server_url if known else context.config.server_url
    if url is None:
        return {"url": None, "reachable": None, "note": "no patch server configured"}
    with ServerClient(url, timeout=context.config.server_timeout_seconds, attempts=1) as client:
        try:
            client.health()
        except ServerError as exc:  # unreachable is a finding, not a failure
            return {"url": url, "reachable": False, "error": str(exc)}
    return {"url": url, "reachable": True}


def _errors(context: AgentContext) -> dict[str, Any]:
    from nonstop.agent.online import last_checkin

    history = last_checkin(context)
    checkin = history.get("last_checkin") or {}
    return {"last_checkin": checkin.get("at"), "last_error": history.get("last_error")}


def _lines(document: dict[str, Any]) -> list[str]:
    lines = []
    for section, facts in document.items():
        if not isinstance(facts, dict):
            lines.append(f"{section}: {facts}")
            continue
        lines.append(f"{section}:")
        lines += [f"  {key}: {value}" for key, value in facts.items()]
    return lines


def run_doctor(context: AgentContext) -> int:
    """``--doctor``: every section is probed on its own (a failure is that section's one line).

    Contacts the patch server's health check once (no retry); changes nothing; exit 0.
    """
    document: dict[str, Any] = {
        "nonstopctl": {"version": __version__, "executable": sys.executable},
        "host": _probe(_host),
        "kernel": _probe(lambda: _kernel(context)),
        "configuration": _probe(lambda: _configuration(context)),
        "state": _probe(lambda: _state(context)),
        "server": _probe(lambda: _server(context)),
        "recent": _probe(lambda: _errors(context)),
    }
    return context.output(document, _lines(document))


def run_license_info(context: AgentContext) -> int:
    """``--license-info``: local state only (no network access); NotRegistered if unregistered."""
    from nonstop.agent.online import last_checkin

    known = registration.require(context.state)
    checkin = last_checkin(context).get("last_checkin") or {}
    document = {
        "registration_key_id": known.key_id,
        "feed": checkin.get("feed", known.feed),
        "server": known.server_url,
        "host_id": known.host_id,
        "hostname": known.hostname,
        "registered_at": known.registered_at,
    }
    lines = [
        f"registration key: {known.key_id}",
        f"feed:             {document['feed']}",
        f"server:           {known.server_url}",
        f"host id:          {known.host_id} ({known.hostname})",
    ]
    return context.output(document, lines)


ACTIONS = [
    Action(
        "--doctor",
        "a support report: versions, distro, kernel, livepatch, config, state, server, errors",
        run_doctor,
    ),
    Action(
        "--license-info",
        "registration key id (never the key), feed, server and host id",
        run_license_info,
    ),
]
