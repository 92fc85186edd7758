"""What the agent does with kernel bundles: check, apply, confirm, unload, report.

Every path that loads a module goes through :meth:`KernelManager._apply`, in
this order: the bundle is verified (by the caller, through the bundle API),
it must name this exact kernel build, its module must be a livepatch module
built for this release and stamped with the bundle's level, the level policy
must allow it, the crash-loop guard must not block it; only then is it
recorded as pending, loaded, and confirmed once its transition has finished.
The one exception is a rollback, which loads the last confirmed level back
directly (``_roll_back``): it was confirmed before, so it is not pending again.
Mutating operations hold the kernel state lock for their whole duration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nonstop.agent.actions import AgentContext, AgentError
from nonstop.agent.state import StateStore
from nonstop.bundle.errors import BundleError
from nonstop.bundle.identity import IdentityError, running_kernel_target
from nonstop.bundle.levels import LevelAction, decide_level
from nonstop.bundle.manifest import KernelTarget, utc_now
from nonstop.kernel import guard
from nonstop.kernel.errors import KernelError
from nonstop.kernel.livepatch import (
    LivepatchDriver,
    LoadRefusedError,
    TransitionReport,
    TransitionTimeout,
)
from nonstop.kernel.modinfo import ModinfoError, read_modinfo
from nonstop.kernel.state import STATE_NAME, Blocked, KernelState, LevelRef

if TYPE_CHECKING:  # reports (--info, --uname) run without the signature machinery
    from nonstop.agent.bundle_cache import BundleCache
    from nonstop.bundle import Bundle, TrustedKeys

PROC_VERSION = Path("/proc/version")


class KernelPatchError(KernelError):
    """A kernel bundle cannot be applied or a kernel command cannot run (one-line reason)."""


class WrongKernelError(KernelPatchError):
    """The bundle names another kernel build than the running one."""


class UnhealthyLevelError(KernelPatchError):
    """The kernel reported trouble while the level went in: it was rolled back and blocked."""


def running_version(proc_version_text: str, release: str) -> str:
    """The running kernel's own version: Debian's package version when /proc/version has it."""
    match = re.search(r"\bDebian (\S+)", proc_version_text)
    return match.group(1) if match else release


@dataclass
class ApplyResult:
    """What an update or auto-update did."""

    action: str
    """``applied``, ``already``, ``nothing`` or ``skipped``."""
    ref: LevelRef | None = None
    report: TransitionReport | None = None
    tripped: Blocked | None = None
    """A level the guard blocked during this run (found unconfirmed)."""
    message: str = ""
    blocked: list[Blocked] = field(default_factory=list)


class KernelManager:
    """The livepatch levels of the running kernel: its state document (``kernel.json``),
    its driver and the verified bundle cache.

    Reports read the state without the lock; every change holds it (see module).
    """

    def __init__(
        self,
        store: StateStore,
        cache: BundleCache,
        trusted: Callable[[], TrustedKeys],
        running: KernelTarget,
        *,
        driver: LivepatchDriver | None = None,
        boot_id: Callable[[], str] = guard.current_boot_id,
        taint: Callable[[], int] = guard.kernel_taint,
        proc_version: Path = PROC_VERSION,
    ) -> None:
        self.store = store
        self.cache = cache
        self.trusted = trusted
        self.running = running
        self.driver = driver or LivepatchDriver()
        self.boot_id = boot_id
        self.taint = taint
        self.proc_version = proc_version

    # -- state ---------------------------------------------------------------

    def load_state(self) -> KernelState:
        """The recorded state as on disk: no lock taken, an unconfirmed level not yet tripped."""
        return KernelState.from_dict(self.store.read(STATE_NAME))

    def _save(self, state: KernelState) -> None:
        self.store.write(STATE_NAME, state.to_dict())

    @contextmanager
    def _locked_state(self) -> Iterator[tuple[KernelState, Blocked | None]]:
        """The state under the lock, with any unconfirmed level already turned into a block."""
        with self.store.locked(STATE_NAME):
            state = self.load_state()
            tripped = guard.trip_unconfirmed(state, self.boot_id(), utc_now())
            if tripped is not None:
                self._save(state)
            yield state, tripped

    def loaded(self, ref: LevelRef | None) -> bool:
        """True when REF's module is loaded, enabled and out of transition (False for None)."""
        status = self.driver.status(ref.module) if ref else None
        return status is not None and status.enabled and not status.transition

    # -- checks --------------------------------------------------------------

    def check_bundle(self, bundle: Bundle) -> tuple[LevelRef, bytes]:
        """Refuse a verified bundle not made for this exact kernel; return its level and module."""
        manifest = bundle.manifest
        if manifest.kind != "kernel" or not isinstance(manifest.target, KernelTarget):
            raise KernelPatchError(f"bundle is a {manifest.kind} bundle, not a kernel bundle")
        if not manifest.target.matches(self.running):
            raise WrongKernelError(
                f"bundle is for {manifest.target.describe()}, "
                f"but this host runs {self.running.describe()}"
            )
        image = bundle.payload("module")
        try:
            info = read_modinfo(image)
        except ModinfoError as exc:
            raise KernelPatchError(f"bundle module: {exc}") from None
        if not info.is_livepatch or not info.name:
            raise KernelPatchError("bundle module is not a livepatch module")
        if info.release != self.running.release:
            raise WrongKernelError(
                f"module {info.name} is built for kernel {info.release}, "
                f"this host runs {self.running.release}"
            )
        stamped = info.get("nonstop_level")
        if stamped is not None and stamped != str(manifest.level):
            raise KernelPatchError(
                f"module {info.name} is stamped level {stamped}, the manifest says {manifest.level}"
            )
        ref = LevelRef(manifest.level, bundle.sha256, info.name, manifest.effective_version)
        return ref, image

    # -- mutating operations ---------------------------------------------------

    def update(
        self, bundle_bytes: bytes, bundle: Bundle, *, timeout: float, force: bool = False
    ) -> ApplyResult:
        """Apply BUNDLE (already verified; BUNDLE_BYTES are its file) as the wanted level."""
        ref, image = self.check_bundle(bundle)
        with self._locked_state() as (state, tripped):
            if self.loaded(ref) and not self.loaded(state.current):
                # Loaded and enabled, but not on record (state dir lost): adopt it.
                state.current = state.wanted = ref
                self._save(state)
            applied = state.current if self.loaded(state.current) else None
            action = decide_level(applied.level if applied else None, ref.level)
            if action is LevelAction.ALREADY and applied is not None:
                return ApplyResult(
                    "already",
                    applied,
                    tripped=tripped,
                    message=f"{applied.describe()} is already applied",
                )
            self.cache.store(bundle_bytes, self.trusted())
            previous_wanted = state.wanted
            state.wanted = ref
            try:
                report = self._apply(state, ref, image, timeout=timeout, force=force)
            except BaseException:
                state.wanted = previous_wanted
                self._save(state)
                raise
            state.held = None  # the operator's own apply, or a level above the held one
            self._save(state)
            return ApplyResult("applied", ref, report, tripped)

    def auto_update(self, *, timeout: float) -> ApplyResult:
        """At boot: re-apply the wanted level from the verified cache, unless the guard blocks it.

        A blocked wanted level falls back to the last confirmed level.
        """
        with self._locked_state() as (state, tripped):
            blocked = list(state.blocked)
            candidates = [ref for ref in (state.wanted, state.current) if ref is not None]
            usable = [ref for ref in candidates if guard.blocked_entry(state, ref) is None]
            if not usable:
                note = "no kernel level to apply"
                if candidates:
                    note = f"{candidates[0].describe()} is blocked by the crash-loop guard"
                return ApplyResult("nothing", tripped=tripped, message=note, blocked=blocked)
            ref = usable[0]
            if self.loaded(ref):
                return ApplyResult(
                    "already",
                    ref,
                    tripped=tripped,
                    blocked=blocked,
                    message=f"{ref.describe()} is already applied",
                )
            bundle = self.cache.load(ref.bundle_sha256, self.trusted())
            checked, image = self.check_bundle(bundle)
            report = self._apply(state, checked, image, timeout=timeout, force=False)
            return ApplyResult("applied", checked, report, tripped, blocked=blocked)

    def _apply(
        self, state: KernelState, ref: LevelRef, image: bytes, *, timeout: float, force: bool
    ) -> TransitionReport:
        guard.begin(state, ref, self.boot_id(), utc_now())
        self._save(state)  # durable before the module goes in: this is what the guard reads
        taint_before = self.taint()
        try:
            report = self.driver.apply(image, ref.module, timeout=timeout, force=force)
        except (LoadRefusedError, TransitionTimeout):
            # The kernel is exactly as before: not a crash, nothing to block.
            guard.abandon(state)
            self._save(state)
            raise
        # Any other failure (interrupted, revert incomplete) leaves the level
        # pending, so the next run blocks it until an operator has looked.
        problems = guard.new_problems(taint_before, self.taint())
        if problems:
            self._roll_back(state, ref, problems, timeout=timeout)
        guard.confirm(state, ref)
        self._save(state)
        return report

    def _roll_back(
        self, state: KernelState, ref: LevelRef, problems: list[str], *, timeout: float
    ) -> None:
        """Take out unhealthy REF, block it, bring back the last confirmed level; then raise."""
        self.driver.disable(ref.module, timeout=timeout)
        reason = f"the kernel reported {', '.join(problems)} while {ref.describe()} went in"
        guard.block(state, ref, reason, utc_now())
        self._save(state)
        restored = ""
        previous = state.current
        if previous is not None and previous != ref:
            bundle = self.cache.load(previous.bundle_sha256, self.trusted())
            checked, image = self.check_bundle(bundle)
            self.driver.apply(image, checked.module, timeout=timeout)
            restored = f"; {previous.describe()} restored"
        raise UnhealthyLevelError(f"{reason}: rolled back and blocked{restored}")

    def unload(self, *, timeout: float) -> list[TransitionReport]:
        """Disable and unload every livepatch: the original kernel code runs again.

        The level taken out is held: automatic updates leave it (and lower levels) out
        until the operator applies a level again or the server offers a higher one.
        """
        with self._locked_state() as (state, _):
            reports = [
                self.driver.disable(patch.name, timeout=timeout)
                for patch in reversed(self.driver.patches())
            ]
            if state.current is not None:
                state.held = max(state.current.level, state.held or 0)
            state.current = None
            state.wanted = None
            self._save(state)
            return reports

    def clear_guard(self) -> list[Blocked]:
        """Unblock every blocked level (the operator's decision) and return what was cleared.

        A level left unconfirmed by a crash is turned into a block first, so it is cleared too.
        """
        with self._locked_state() as (state, _):
            cleared = guard.clear(state)
            self._save(state)
            return cleared

    # -- reports -------------------------------------------------------------

    def real_version(self) -> str:
        """The running kernel's version as its distribution names it (never raises)."""
        try:
            text = self.proc_version.read_text()
        except OSError:
            text = ""
        return running_version(text, self.running.release)

    def uname(self) -> dict[str, Any]:
        """``--uname``'s document: the loaded level's effective version, else the real version."""
        state = self.load_state()
        applied = state.current if self.loaded(state.current) else None
        real = self.real_version()
        return {
            "effective_version": applied.effective_version if applied else real,
            "source": f"patch level {applied.level}" if applied else "running kernel",
            "release": self.running.release,
            "real_version": real,
        }

    def info(self) -> dict[str, Any]:
        """``--info``'s document, from the state and the driver; read-only (takes no lock)."""
        state = self.load_state()
        applied = state.current if self.loaded(state.current) else None
        patches = self.driver.patches()
        moving = [patch.name for patch in patches if patch.transition]
        notes = []
        if state.current and not applied:
            notes.append(
                f"{state.current.describe()} is recorded but not loaded; "
                "--auto-update re-applies it"
            )
        return {
            "kernel": {
                "release": self.running.release,
                "build_id": self.running.build_id,
                "version": self.real_version(),
            },
            "livepatch_supported": self.driver.available(),
            "level": applied.level if applied else None,
            "module": applied.module if applied else None,
            "bundle_sha256": applied.bundle_sha256 if applied else None,
            "effective_version": applied.effective_version if applied else self.real_version(),
            "wanted_level": state.wanted.level if state.wanted else None,
            "transition": {"in_progress": bool(moving), "patches": moving},
            "patches": [
                {
                    "name": patch.name,
                    "enabled": patch.enabled,
                    "transition": patch.transition,
                    "objects": list(patch.objects),
                }
                for patch in patches
            ],
            "guard": self._guard_view(state),
            "notes": notes,
        }

    def _guard_view(self, state: KernelState) -> dict[str, Any]:
        pending = None
        status = "blocked" if state.blocked else "clear"
        if state.pending is not None:
            went_down = state.pending.boot_id != self.boot_id()
            pending = {
                "level": state.pending.ref.level,
                "module": state.pending.ref.module,
                "started": state.pending.started,
                "unconfirmed_across_reboot": went_down,
            }
            # Read-only view: a pending record from an earlier boot will be
            # blocked by the next command that takes the lock.
            status = "blocked" if went_down else "applying"
        return {
            "state": status,
            "pending": pending,
            "blocked": [
                {
                    "level": item.ref.level,
                    "module": item.ref.module,
                    "bundle_sha256": item.ref.bundle_sha256,
                    "reason": item.reason,
                    "since": item.since,
                }
                for item in state.blocked
            ],
        }

    def patch_info(self) -> dict[str, Any]:
        """What the loaded level fixes, from its cached bundle verified again (else BundleError).

        With no level loaded: level None and empty lists.
        """
        state = self.load_state()
        applied = state.current if self.loaded(state.current) else None
        if applied is None:
            return {"level": None, "fixes": [], "cves": [], "functions": []}
        bundle = self.cache.load(applied.bundle_sha256, self.trusted())
        manifest = bundle.manifest
        return {
            "level": manifest.level,
            "module": applied.module,
            "effective_version": manifest.effective_version,
            "created": manifest.created,
            "bundle_sha256": bundle.sha256,
            "key_id": bundle.key_id,
            "description": manifest.description,
            "fixes": [
                {"title": fix.title, "cves": list(fix.cves), "references": list(fix.references)}
                for fix in manifest.fixes
            ],
            "cves": manifest.cves,
            "functions": [
                {"function": item.target, "object": item.object or "vmlinux"}
                for item in manifest.functions
            ],
        }


# -- what the flag handlers, the online update and the daemon share ------------------------

KERNEL_FAILURES = (KernelError, BundleError)
"""What a kernel apply can fail with, each with a one-line message; the kernel is unchanged."""


def manager_for(context: AgentContext) -> KernelManager:
    """The manager for the running kernel, on CONTEXT's state, cache and trusted keys."""
    try:
        running = running_kernel_target()
    except IdentityError as exc:
        raise AgentError(str(exc)) from None
    return KernelManager(context.state, context.bundle_cache, context.trusted_keys, running)


def transition_timeout(context: AgentContext) -> float:
    """``--transition-timeout`` in seconds (positive), after which a transition is reverted."""
    timeout: float = context.args.transition_timeout
    if timeout <= 0:
        raise AgentError("--transition-timeout must be positive")
    return timeout


def restore(context: AgentContext) -> tuple[ApplyResult | None, str]:
    """Boot step: re-apply the cached, verified kernel level (no network); or why it failed."""
    try:
        return manager_for(context).auto_update(timeout=transition_timeout(context)), ""
    except KERNEL_FAILURES as exc:
        return None, str(exc)


def report_dict(report: TransitionReport | None) -> dict[str, Any] | None:
    """A finished transition as JSON (seconds rounded to the millisecond)."""
    if report is None:
        return None
    return {
        "patch": report.patch,
        "seconds": round(report.seconds, 3),
        "replaced": report.replaced,
        "forced": report.forced,
    }


def blocked_dict(entry: Blocked) -> dict[str, Any]:
    """A level the crash-loop guard blocks, as JSON."""
    return {"level": entry.ref.level, "module": entry.ref.module, "reason": entry.reason}


def apply_document(result: ApplyResult) -> dict[str, Any]:
    """What an update did, as the JSON document of ``--update`` and ``--auto-update``."""
    return {
        "action": result.action,
        "level": result.ref.level if result.ref else None,
        "module": result.ref.module if result.ref else None,
        "effective_version": result.ref.effective_version if result.ref else None,
        "transition": report_dict(result.report),
        "guard_tripped": blocked_dict(result.tripped) if result.tripped else None,
        "blocked": [blocked_dict(entry) for entry in result.blocked],
        "message": result.message,
    }


def apply_lines(result: ApplyResult) -> list[str]:
    """What an update did, as text lines (possibly none: nothing happened worth a line)."""
    lines = []
    if result.tripped:
        lines.append(f"crash-loop guard: blocked {result.tripped.reason}")
    if result.report and result.ref:
        replaced = ", ".join(result.report.replaced) or "nothing"
        lines.append(
            f"applied {result.ref.describe()} in {result.report.seconds:.2f} s "
            f"(replaced {replaced}); effective version {result.ref.effective_version}"
        )
    if result.message:
        lines.append(result.message)
    return lines
