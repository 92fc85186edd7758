"""`nonstopctl` kernel area: kcarectl-style flags for kernel livepatch levels.

``--update [--bundle FILE]`` (without a bundle: from the patch server),
``--unload``, ``--info``, ``--patch-info``, ``--uname`` and
``--clear-crash-guard``. The work, and what the online update and the
daemon share (the boot step ``restore``, result documents), is in
:mod:`nonstop.agent.kernel_levels`; this module turns flags into calls and
results into text or one JSON document.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from nonstop.agent.actions import Action, AgentContext, AgentError
from nonstop.agent.kernel_levels import (
    KERNEL_FAILURES,
    ApplyResult,
    UnhealthyLevelError,
    apply_document,
    apply_lines,
    blocked_dict,
    manager_for,
    report_dict,
    transition_timeout,
)
from nonstop.console import emit_json, stdout
from nonstop.kernel.livepatch import TransitionTimeout

DEFAULT_TIMEOUT = 60.0


def add_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``--update``/``--unload``: the transition timeout and the dangerous force."""
    kernel = parser.add_argument_group("kernel options")
    kernel.add_argument(
        "--transition-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"revert a transition not done after this long (default {DEFAULT_TIMEOUT:g})",
    )
    kernel.add_argument(
        "--force-transition",
        action="store_true",
        help="DANGEROUS: on timeout, force the remaining tasks over instead of reverting "
        "(skips the consistency check; the module can then never be unloaded)",
    )


@contextmanager
def _kernel_errors(context: AgentContext) -> Iterator[None]:
    """Kernel-side refusals become one-line agent errors (with a JSON document under --json)."""
    try:
        yield
    except TransitionTimeout as exc:
        tasks = [task.to_dict() for task in exc.blocking]
        if context.json:
            emit_json({"action": "reverted", "error": str(exc), "blocking_tasks": tasks})
        else:
            for task in exc.blocking:
                stdout.print(f"blocking task: {task.describe()}", markup=False)
                for frame in task.stack:
                    stdout.print(f"    {frame}", markup=False)
        raise AgentError(str(exc)) from None
    except UnhealthyLevelError as exc:
        if context.json:
            emit_json({"action": "rolled_back", "error": str(exc)})
        raise AgentError(str(exc)) from None
    except KERNEL_FAILURES as exc:
        if context.json:
            emit_json({"action": "refused", "error": str(exc)})
        raise AgentError(str(exc)) from None


def _print_result(context: AgentContext, result: ApplyResult) -> int:
    return context.output(apply_document(result), apply_lines(result))


def run_update(context: AgentContext) -> int:
    """``--update``: without ``--bundle``, the online update of the kernel only (``online_update``).

    With ``--bundle FILE``, that file is verified, then applied and cached; a level
    lower than the loaded one is refused. Kernel refusals and timeouts become one
    AgentError (EXIT_ERROR), with a JSON document first under ``--json``.
    """
    timeout = transition_timeout(context)
    if context.args.bundle is None:
        from nonstop.agent.online_commands import online_update

        return online_update(context, "kernel", timeout)
    manager = manager_for(context)
    from nonstop.agent.level_files import refresh_kernel_file
    from nonstop.bundle import open_bundle
    from nonstop.bundle.container import read_bundle_bytes

    with _kernel_errors(context):
        data = read_bundle_bytes(context.args.bundle)
        bundle = open_bundle(data, context.trusted_keys())
        try:
            result = manager.update(
                data, bundle, timeout=timeout, force=context.args.force_transition
            )
        finally:
            refresh_kernel_file(context.config.state_dir, manager)
    return _print_result(context, result)


def run_unload(context: AgentContext) -> int:
    """``--unload``: every livepatch out, the unloaded level held back from automatic updates."""
    from nonstop.agent.level_files import refresh_kernel_file

    manager = manager_for(context)
    with _kernel_errors(context):
        try:
            reports = manager.unload(timeout=transition_timeout(context))
        finally:
            refresh_kernel_file(context.config.state_dir, manager)
    document = {"action": "unloaded", "patches": [report_dict(r) for r in reports]}
    lines = [f"unloaded {r.patch} in {r.seconds:.2f} s" for r in reports]
    return context.output(document, lines or ["no kernel patch was loaded"])


def run_clear_guard(context: AgentContext) -> int:
    """``--clear-crash-guard``: unblock every level the guard blocked (they may load again)."""
    cleared = manager_for(context).clear_guard()
    document = {"action": "cleared", "cleared": [blocked_dict(entry) for entry in cleared]}
    lines = [f"unblocked {entry.ref.describe()} ({entry.reason})" for entry in cleared]
    return context.output(document, lines or ["the crash-loop guard blocked nothing"])


def run_info(context: AgentContext) -> int:
    """``--info``: read-only (no lock taken, no guard tripped); exit 0."""
    info = manager_for(context).info()
    kernel = info["kernel"]
    level = info["level"]
    guard_view = info["guard"]
    moving = info["transition"]["patches"]
    lines = [
        f"kernel:            {kernel['release']} ({kernel['version']})",
        f"kernel build-id:   {kernel['build_id']}",
        f"patch level:       {level if level is not None else 'none'}",
        f"module:            {info['module'] or '-'}",
        f"effective version: {info['effective_version']}",
        f"transition:        {', '.join(moving) or 'none'}",
        f"crash-loop guard:  {guard_view['state']}",
    ]
    lines += [f"  blocked level {b['level']}: {b['reason']}" for b in guard_view["blocked"]]
    lines += [f"note: {note}" for note in info["notes"]]
    return context.output(info, lines)


def run_patch_info(context: AgentContext) -> int:
    """``--patch-info``: read from the loaded level's cached bundle, verified again; exit 0.
    Text in kcarectl's ``key: value`` form (``patch_notes``)."""
    from nonstop.agent.patch_notes import known_scores, kpatch_lines

    manager = manager_for(context)
    info = manager.patch_info()
    if info["level"] is None:
        return context.output(info, ["no kernel patch applied"])
    scores, url = known_scores(context.state)
    lines = kpatch_lines(
        manager.running.release,
        info["level"],
        info["effective_version"],
        info["fixes"],
        scores,
        url,
    )
    lines += ["", f"kpatch-module: {info['module']}"]
    lines += [f"kpatch-function: {f['function']} in {f['object']}" for f in info["functions"]]
    return context.output(info, lines)


def run_uname(context: AgentContext) -> int:
    """``--uname``: one line, the applied level's effective version, else the running one."""
    document = manager_for(context).uname()
    return context.output(document, [document["effective_version"]])


ACTIONS = [
    Action(
        "--update",
        "apply the kernel patch level the patch server offers, or the one in --bundle FILE",
        run_update,
        options=frozenset({"--bundle", "--transition-timeout", "--force-transition"}),
    ),
    Action(
        "--unload",
        "disable and unload the kernel patches (rollback)",
        run_unload,
        options=frozenset({"--transition-timeout"}),
    ),
    Action("--info", "kernel patch level, module, transition, guard state", run_info),
    Action("--patch-info", "fixes, CVEs and functions of the applied level", run_patch_info),
    Action("--uname", "the effective kernel version (what scanners should read)", run_uname),
    Action(
        "--clear-crash-guard",
        "unblock kernel levels the crash-loop guard stopped from loading",
        run_clear_guard,
    ),
]
