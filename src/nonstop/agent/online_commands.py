"""`nonstopctl` online area: registration, updates from the patch server, status, settings.

Flags (kcarectl's names): ``--register KEY [--server URL]``, ``--unregister``,
``--auto-update``, ``--check``, ``--status``, ``--server-info``,
``--enable-lib``/``--disable-lib``, ``--set-sticky-patch LEVEL|DATE`` and
``--daemon``. ``--update`` and ``--lib-update`` without ``--bundle`` come
here too (:func:`online_update`). Exit codes and behaviour: docs/agent.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from nonstop.agent import registration
from nonstop.agent.actions import (
    EXIT_NO,
    EXIT_OK,
    EXIT_PARTIAL,
    Action,
    AgentContext,
    AgentError,
)
from nonstop.agent.config import load_config, normalize_sticky, set_override
from nonstop.console import fail, stderr

_STATUS_TEXT = {
    0: "up to date",
    1: "no patches for this host",
    2: "updates available",
    3: "unsupported: this kernel has no livepatch support and userspace patching is off",
}


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--server URL``, which only ``--register`` takes."""
    online = parser.add_argument_group("online options")
    online.add_argument(
        "--server", metavar="URL", help="--register: the patch server (default: server_url)"
    )


def _notify(line: str) -> None:
    stderr.print(f"nonstopctl: {line}", markup=False)


# -- registration --------------------------------------------------------------------------


def run_register(context: AgentContext) -> int:
    """``--register KEY``: refused (before any network access) when already registered.

    ``registration.json`` is written only after the server's answer checked out;
    the key itself is never stored, only its public id.
    """
    from nonstop.agent.client import ServerClient

    key = context.value or ""
    key_id = registration.key_id_of(key)
    store = context.state
    known = registration.load(store)
    if known is not None:
        raise AgentError(
            f"this host is already registered with {known.server_url} as {known.host_id}; "
            "run nonstopctl --unregister first (it also clears a registration the server "
            "no longer knows)"
        )
    url = registration.server_url_for(context.config, context.args.server)
    hostname = registration.host_name()
    config = context.config
    with ServerClient(
        url, timeout=config.server_timeout_seconds, attempts=config.server_attempts, notify=_notify
    ) as client:
        answer = client.register(key, hostname)
    record = registration.new_record(url, key, answer.host_id, answer.token, answer.feed, hostname)
    registration.save(store, record)
    context.output(
        {"action": "registered", **record.public_view()},
        [
            f"registered {hostname} with {url} as host {record.host_id} "
            f"(key {key_id}, feed {record.feed})"
        ],
    )
    return 0


def run_unregister(context: AgentContext) -> int:
    """``--unregister``: tell the server, then forget the registration and ``online.json``.

    A server that no longer knows the host (401/404) is forgotten anyway; any other
    failure keeps the registration so the command can be run again. Live patches stay.
    """
    from nonstop.agent.client import ServerClient, ServerError

    store = context.state
    known = registration.require(store)
    config = context.config
    with ServerClient(
        known.server_url,
        token=known.token,
        timeout=config.server_timeout_seconds,
        attempts=config.server_attempts,
        notify=_notify,
    ) as client:
        try:
            client.unregister(known.host_id)
        except ServerError as exc:
            if exc.status not in (401, 404):
                raise  # the server may still count this host: keep the registration to retry
    registration.drop(store)
    store.path("online").unlink(missing_ok=True)
    context.output(
        {"action": "unregistered", "host_id": known.host_id, "server_url": known.server_url},
        [f"unregistered host {known.host_id} from {known.server_url}; live patches stay applied"],
    )
    return 0


def run_server_info(context: AgentContext) -> int:
    """``--server-info``: local state only (no network access); NotRegistered if unregistered."""
    from nonstop.agent.online import last_checkin

    known = registration.require(context.state)
    history = last_checkin(context)
    checkin = history.get("last_checkin") or {}
    error = history.get("last_error")
    document = {
        "server": known.server_url,
        "registration_key_id": known.key_id,
        "host_id": known.host_id,
        "hostname": known.hostname,
        "feed": checkin.get("feed", known.feed),
        "registered_at": known.registered_at,
        "last_checkin": checkin.get("at"),
        "last_error": error,
        "sticky": context.config.sticky,
        "update_delay_hours": context.config.update_delay_hours,
        "userspace_enabled": context.config.userspace_enabled,
    }
    lines = [
        f"server:            {known.server_url}",
        f"registration key:  {known.key_id}",
        f"host id:           {known.host_id} ({known.hostname})",
        f"feed:              {document['feed']}",
        f"registered:        {known.registered_at}",
        f"last check-in:     {document['last_checkin'] or 'never'}",
        f"sticky patch:      {context.config.sticky or 'none'}",
        f"update delay:      {context.config.update_delay_hours} h",
        f"userspace patches: {'enabled' if context.config.userspace_enabled else 'disabled'}",
    ]
    if error:
        lines.append(f"last error:        {error['at']}: {error['message']}")
    context.output(document, lines)
    return 0


# -- settings ------------------------------------------------------------------------------


def _set_lib(context: AgentContext, enabled: bool) -> int:
    set_override(context.config, "userspace_enabled", enabled)
    word = "enabled" if enabled else "disabled"
    note = "" if enabled else "; live patches stay until nonstopctl --lib-unload"
    context.output({"userspace_enabled": enabled}, [f"userspace patching {word}{note}"])
    return 0


def run_enable_lib(context: AgentContext) -> int:
    """``--enable-lib``: kept in ``settings.json``, so it outlives a rewritten configuration."""
    return _set_lib(context, True)


def run_disable_lib(context: AgentContext) -> int:
    """``--disable-lib``: kept in ``settings.json``; live patches stay until ``--lib-unload``."""
    return _set_lib(context, False)


def run_set_sticky(context: AgentContext) -> int:
    """``--set-sticky-patch LEVEL|DATE``: kept in ``settings.json``; an empty value removes the
    flag's pin, so the configuration file's pin (if any) applies again.
    """
    try:
        sticky = normalize_sticky(context.value)
    except ValueError as exc:
        raise AgentError(str(exc)) from None
    set_override(context.config, "sticky", sticky)
    if sticky is not None:
        context.output({"sticky": sticky, "source": "flag"}, [f"sticky patch set to {sticky}"])
        return 0
    # Unpinned by flag: the configuration file's own pin (if any) applies again; say which.
    effective = load_config(context.args.config).sticky
    source = str(context.config.source) if effective else None
    text = f"; the configuration file's sticky = {effective} applies" if effective else ""
    context.output({"sticky": effective, "source": source}, [f"sticky patch removed{text}"])
    return 0


# -- updates -------------------------------------------------------------------------------


def _online_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"checked in with {report['server']} (feed {report['feed']})"]
    for item in report["applied"]:
        if item["kind"] == "kernel":
            lines.append(f"kernel level {item.get('level')}: {item['action']}")
            if item.get("error"):
                lines.append(f"  {item['error']}")
            continue
        if "error" in item:  # the engine refused the bundle itself
            lines.append(f"{item['target']} level {item['level']}: failed: {item['error']}")
            continue
        counts: dict[str, int] = {}
        for process in item["processes"]:
            counts[process["result"]] = counts.get(process["result"], 0) + 1
        summary = ", ".join(f"{n} {result}" for result, n in sorted(counts.items()))
        lines.append(f"{item['soname']} level {item['level']}: {summary or 'no process maps it'}")
    lines += [_held_line(held) for held in report["held_back"]]
    lines += [f"not applied: {i['name']}: {i['reason']}" for i in report["ignored"]]
    if not report["applied"]:
        lines.append("nothing new to apply")
    return lines


def _held_line(held: dict[str, Any]) -> str:
    until = f" until {held['until']}" if held["until"] else ""
    return f"held back: {held['name']} level {held['level']}{until}: {held['reason']}"


def _failed(report: dict[str, Any]) -> bool:
    return any(item["action"] == "failed" for item in report["applied"])


def online_update(context: AgentContext, kind: str, timeout: float) -> int:
    """``--update`` / ``--lib-update`` without ``--bundle``: what the server offers for KIND."""
    from nonstop.agent.online import run_update

    if registration.load(context.state) is None:
        flag = "--update" if kind == "kernel" else "--lib-update"
        raise AgentError(
            f"{flag} needs --bundle FILE or a registration with a patch server "
            "(nonstopctl --register KEY)"
        )
    report = run_update(context, {kind}, _notify, timeout, operator=True)
    context.output({"action": "update", **report}, _online_lines(report))
    return EXIT_PARTIAL if _failed(report) else 0


def _restore_lines(restored: list[dict[str, Any]]) -> list[str]:
    lines = []
    for entry in restored:
        if "error" in entry:
            lines.append(f"userspace {entry['build_id'][:16]}: {entry['error']}")
            continue
        patched = sum(1 for p in entry["processes"] if p["result"] == "patched")
        lines.append(
            f"{entry['soname']} level {entry['level']}: re-applied to {patched} of "
            f"{len(entry['processes'])} processes"
        )
    return lines


def run_auto_update(context: AgentContext) -> int:
    """Boot re-apply (kernel, then userspace) before any network access; then the online update."""
    from nonstop.agent.client import ServerError
    from nonstop.agent.online import run_update

    if not context.config.auto_update:
        skipped = "auto_update is off in the configuration"
        context.output({"action": "skipped", "message": skipped}, [skipped])
        return 0
    from nonstop.agent import kernel_levels, lib_levels

    timeout = kernel_levels.transition_timeout(context)
    kernel, kernel_error = kernel_levels.restore(context)
    kernel_document = (
        kernel_levels.apply_document(kernel)
        if kernel
        else {"action": "failed", "error": kernel_error}
    )
    lines = kernel_levels.apply_lines(kernel) if kernel else [f"kernel: {kernel_error}"]
    restored, failed = lib_levels.restore_userspace(context, lib_levels.engine_for(context))
    failed |= kernel is None
    lines += _restore_lines(restored)
    document: dict[str, Any] = {"kernel": kernel_document, "userspace": restored}
    server_error = None
    if registration.load(context.state) is None:
        document["online"] = {"skipped": "not registered with a patch server"}
    else:
        try:
            report = run_update(context, {"kernel", "userspace"}, _notify, timeout)
        except ServerError as exc:
            document["online"] = {"error": str(exc)}
            server_error = exc
        else:
            document["online"] = report
            lines += _online_lines(report)
            failed |= _failed(report)
    context.output(document, lines)
    if server_error is not None:
        # The boot steps above are reported; the server's failure is the one error line.
        fail("nonstopctl", str(server_error), server_error.exit_code)
    return EXIT_PARTIAL if failed else 0


def _decisions(context: AgentContext) -> tuple[int, dict[str, Any]]:
    from nonstop.agent.online import OnlineAgent, host_status

    agent = OnlineAgent(context, _notify)
    answer = agent.check_in()
    choice = agent.choose(answer)
    code = host_status(answer, choice, agent.kernel_supported, context.config.userspace_enabled)
    document = {
        "status": code,
        "meaning": _STATUS_TEXT[code],
        "feed": answer.feed,
        "available": [
            {
                "target": d.target,
                "name": d.name,
                "applied_level": d.applied_level,
                "level": d.bundle.level if d.bundle else None,
            }
            for d in choice.offers
        ],
        "held_back": [hold.to_dict() for hold in choice.held],
    }
    return code, document


def run_check(context: AgentContext) -> int:
    """``--check``: checks in (recorded in ``online.json``), applies nothing; exit 0 if a level
    is available, EXIT_NO if not.
    """
    _, document = _decisions(context)
    available = document["available"]
    lines = [f"{a['name']}: level {a['level']} available" for a in available] or ["no new patch"]
    lines += [_held_line(held) for held in document["held_back"]]
    context.output({"update_available": bool(available), **document}, lines)
    return EXIT_OK if available else EXIT_NO


def run_status(context: AgentContext) -> int:
    """``--status``: checks in, applies nothing; the exit status is ``host_status``'s (0-3)."""
    code, document = _decisions(context)
    context.output(document, [document["meaning"], *map(_held_line, document["held_back"])])
    return code


def run_daemon(context: AgentContext) -> int:
    """``--daemon``: runs in the foreground until SIGTERM or SIGINT."""
    from nonstop.agent.daemon import Daemon

    return Daemon(context).run()


ACTIONS = [
    Action(
        "--register",
        "register this host with a patch server",
        run_register,
        metavar="KEY",
        options=frozenset({"--server"}),
    ),
    Action("--unregister", "unregister this host from its patch server", run_unregister),
    Action(
        "--auto-update",
        "re-apply cached levels (kernel, then userspace), then check in and apply what is new",
        run_auto_update,
        options=frozenset({"--strict", "--transition-timeout"}),
    ),
    Action("--check", "exit 0 if a newer patch is available, 1 if not", run_check),
    Action(
        "--status",
        "exit 0 up to date, 1 no patches for this host, 2 updates available, 3 unsupported",
        run_status,
    ),
    Action("--server-info", "patch server, key id, host id, feed, last check-in", run_server_info),
    Action("--enable-lib", "turn userspace (library) patching on", run_enable_lib),
    Action("--disable-lib", "turn userspace (library) patching off", run_disable_lib),
    Action(
        "--set-sticky-patch",
        "stay at a level (N) or at the patches of a date (YYYY-MM-DD, DDMMYY); '' unsticks",
        run_set_sticky,
        metavar="LEVEL|DATE",
    ),
    Action("--daemon", "run the agent service: boot re-apply, new processes, updates", run_daemon),
]
