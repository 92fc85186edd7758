"""One online update: check in, choose, download, verify, then apply kernel and userspace.

The order is what keeps a host consistent when the server or the network
misbehaves:

1. check in with the inventory (``inventory``) and read one decision per target;
2. keep the decisions this host acts on: enabled areas only (userspace can be
   switched off, a kernel without livepatch takes no kernel bundle), and the
   local sticky pin and update delay enforced again here, whatever the server said;
3. download every offered bundle not already in the verified cache and verify
   each (signature, digest equal to what the server announced, target equal to
   the decision's). One bad bundle stops the whole update before anything is
   applied: a server that sends one tampered file is not trusted for the others;
4. apply the kernel level (``KernelManager``), then each userspace level to
   every process mapping its target (``lib_levels``), recording each as it goes.

Each process ends fully at the new level or untouched (the engine's rule),
and the last good state stays recorded when any step fails.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from nonstop.agent import lib_levels, registration
from nonstop.agent.actions import AgentContext
from nonstop.agent.api_models import CheckinAnswer, Decision
from nonstop.agent.client import ServerClient, ServerError
from nonstop.agent.inventory import LibraryFacts, collect, kernel_report, library_report
from nonstop.agent.inventory import libraries_in_use as scan_libraries
from nonstop.agent.kernel_levels import KERNEL_FAILURES, KernelManager, apply_document, manager_for
from nonstop.agent.level_files import (
    level_dir,
    refresh_kernel_file,
    refresh_library_files,
    write_kernel_file,
    write_library_files,
)
from nonstop.agent.packages import installed_packages
from nonstop.bundle import Bundle, UserspaceTarget, open_bundle
from nonstop.bundle.errors import BundleError
from nonstop.bundle.manifest import utc_now
from nonstop.userspace import Engine
from nonstop.userspace.errors import EngineError

STATE_NAME = "online"
FINDINGS_NAME = "vulnerabilities"
"""The host's vulnerability findings as last fetched (``nonstopctl --vulnerabilities``)."""
MAX_BUNDLE_BYTES = 64 << 20
NO_BUNDLE = "no bundle for this target"

# --status exit codes (kcarectl's).
STATUS_UP_TO_DATE, STATUS_NO_PATCHES, STATUS_UPDATES, STATUS_UNSUPPORTED = 0, 1, 2, 3


@dataclass(frozen=True)
class Hold:
    """A published level this host does not apply now: why, and until when (None: until the
    pin or the operator changes)."""

    decision: Decision
    level: int
    reason: str
    until: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """As JSON in update, ``--check`` and ``--status`` reports (``until``: ISO 8601 or None)."""
        d = self.decision
        until = self.until.isoformat() if self.until else None
        return {"target": d.target, "name": d.name, "level": self.level, "reason": self.reason,
                "until": until}  # fmt: skip


@dataclass
class Choice:
    """The decisions of one check-in that this host acts on, and those it holds back."""

    offers: list[Decision] = field(default_factory=list)
    held: list[Hold] = field(default_factory=list)
    """Offers held here, and levels the server holds back (the feed's delay), lowest first."""
    ignored: list[tuple[Decision, str]] = field(default_factory=list)
    """Offers for an area that is off here (userspace disabled, no kernel livepatch)."""


@dataclass
class Fetched:
    """An offered bundle, verified against its decision; DATA are the very bytes that verified."""

    decision: Decision
    data: bytes
    bundle: Bundle


def local_hold(
    decision: Decision, sticky: str | None, delay_hours: int, now: datetime
) -> Hold | None:
    """Why the local policy holds back DECISION's bundle (None: it may be applied).

    The server applies the same policy when it knows it; this is the host's
    own guarantee. A pin by date or a delay needs the bundle's publication
    time, which servers send with each offer.
    """
    bundle = decision.bundle
    if bundle is None:
        return None
    kind, _, arg = (sticky or "").partition(":")
    pinned = Hold(decision, bundle.level, f"held back by the local sticky pin {sticky}")
    if kind == "level" and bundle.level > int(arg):
        return pinned
    published = bundle.published_at
    if published is not None:
        published = published if published.tzinfo else published.replace(tzinfo=UTC)
        if kind == "date":
            day = date.fromisoformat(arg)
            end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            if published >= end:
                return pinned
        release = published + timedelta(hours=delay_hours)
        if release > now:
            reason = f"not yet released here (update_delay_hours = {delay_hours})"
            return Hold(decision, bundle.level, reason, release)
    return None


KERNEL_HELD = "kernel"
"""The key of the kernel's held level among the operator's holds (the others: build-ids)."""


def operator_hold(decision: Decision, held: dict[str, int]) -> Hold | None:
    """The level the operator took out (``--unload``, ``--lib-unload``, a rollback) stays out,
    and lower ones. HELD: per library build-id, and for the kernel under KERNEL_HELD."""
    bundle = decision.bundle
    key = KERNEL_HELD if decision.kind == "kernel" else decision.build_id
    if bundle is None or key is None or key not in held or bundle.level > held[key]:
        return None
    if decision.kind == "kernel":
        how = "--unload; nonstopctl --update applies it again"
    else:
        how = "--lib-unload or --allow-downgrade; nonstopctl --lib-update applies it again"
    return Hold(decision, bundle.level, f"the operator took level {held[key]} out ({how})")


def _feed_holds(decision: Decision, feed: str) -> list[Hold]:
    reason = f"not yet released on feed {feed}"
    return [Hold(decision, h.level, reason, h.release_at) for h in decision.held_back]


def choose(
    answer: CheckinAnswer,
    *,
    kernel_supported: bool,
    userspace_enabled: bool,
    sticky: str | None,
    delay_hours: int,
    now: datetime,
    operator_held: dict[str, int] | None = None,
) -> Choice:
    """OPERATOR_HELD: the levels the operator took out (see operator_hold; None: an explicit
    update by the operator, which applies them again)."""
    choice = Choice()
    for decision in answer.targets:
        if decision.kind == "userspace" and not userspace_enabled:
            if decision.action == "apply":
                choice.ignored.append((decision, "userspace patching is disabled"))
            continue
        if decision.kind == "kernel" and not kernel_supported:
            if decision.action == "apply":
                choice.ignored.append((decision, "this kernel has no livepatch support"))
            continue
        if decision.action == "apply":
            held = operator_hold(decision, operator_held or {}) or local_hold(
                decision, sticky, delay_hours, now
            )
            if held:
                choice.held.append(held)
            else:
                choice.offers.append(decision)
        choice.held += _feed_holds(decision, answer.feed)
    return choice


def host_status(answer: CheckinAnswer, choice: Choice, kernel_supported: bool, lib: bool) -> int:
    """kcarectl's --status: 0 up to date, 1 no patches, 2 updates available, 3 unsupported.

    Only the areas this host patches count: the kernel when it supports
    livepatch, libraries when userspace patching is on.
    """
    if choice.offers:
        return STATUS_UPDATES
    if not kernel_supported and not lib:
        return STATUS_UNSUPPORTED  # nothing on this host can be live patched
    relevant = [
        d
        for d in answer.targets
        if (d.kind == "kernel" and kernel_supported) or (d.kind == "userspace" and lib)
    ]
    if any(d.applied_level is not None for d in relevant):
        return STATUS_UP_TO_DATE
    return STATUS_NO_PATCHES


class OnlineAgent:
    """The online side of one nonstopctl run (or one daemon cycle)."""

    def __init__(self, context: AgentContext, notify: Callable[[str], None]) -> None:
        self.context = context
        self.config = context.config
        self.store = context.state
        self.notify = notify
        self.registration = registration.require(self.store)
        self._kernel: KernelManager | None = None
        self._engine: Engine | None = None

    # -- parts ----------------------------------------------------------------

    @property
    def kernel(self) -> KernelManager:
        """The running kernel's manager, made on first use (AgentError if the kernel is unknown)."""
        if self._kernel is None:
            self._kernel = manager_for(self.context)
        return self._kernel

    @property
    def engine(self) -> Engine:
        """The userspace engine as this run's flags set it up, made on first use."""
        if self._engine is None:
            self._engine = lib_levels.engine_for(self.context)
        return self._engine

    def client(self) -> ServerClient:
        """A new client authenticated with the host token; the caller closes it (``with``)."""
        return ServerClient(
            self.registration.server_url,
            token=self.registration.token,
            timeout=self.config.server_timeout_seconds,
            attempts=self.config.server_attempts,
            notify=self.notify,
        )

    @property
    def kernel_supported(self) -> bool:
        """Whether this kernel can take livepatches (else kernel offers are ignored)."""
        return self.kernel.driver.available()

    # -- steps ------------------------------------------------------------------

    def inventory(self) -> dict[str, Any]:
        """The check-in body: this host, its kernel (level only if loaded) and its libraries.

        Scans every process's memory map and may query dpkg/rpm for new libraries.
        """
        state = self.kernel.load_state()
        applied = state.current if self.kernel.loaded(state.current) else None
        uses = scan_libraries(self.engine, self.config.blocklist)
        levels = level_dir(self.config.state_dir)
        write_library_files(levels, uses)
        write_kernel_file(levels, applied.level if applied else None)
        return collect(
            hostname=self.registration.hostname,
            distro=None,
            kernel=kernel_report(self.kernel.running, applied.level if applied else None),
            libraries=library_report(uses, LibraryFacts(self.config.cache_dir)),
            packages=self.packages_report(),
            sticky=self.config.sticky,
            delay_hours=self.config.update_delay_hours,
        )

    def packages_report(self) -> dict[str, Any] | None:
        """The installed packages: the list only if the server did not acknowledge its digest."""
        installed = installed_packages()
        if installed is None:
            return None
        report: dict[str, Any] = {"manager": installed.manager, "digest": installed.digest}
        if self.store.read(STATE_NAME).get("packages_digest") != installed.digest:
            report["items"] = installed.rows
        return report

    @contextmanager
    def recording_errors(self) -> Iterator[None]:
        """A server failure is kept in online.json (``--server-info`` shows it), then raised."""
        try:
            yield
        except ServerError as exc:
            self._record(error=str(exc))
            raise

    def check_in(self) -> CheckinAnswer:
        """Report the inventory and read the decisions; the outcome is recorded either way.
        When the inputs of the host's findings changed, the findings are fetched and kept
        (``FINDINGS_NAME``); a failure there is recorded and does not fail the check-in."""
        body = self.inventory()
        with self.recording_errors(), self.client() as client:
            answer = client.check_in(self.registration.host_id, body)
            self._record(answer=answer)
            digest = answer.vulnerabilities_digest
            if digest is not None and digest != self.store.read(FINDINGS_NAME).get("inputs_digest"):
                try:
                    found = client.findings(self.registration.host_id)
                except ServerError as exc:
                    self._record(error=f"findings not fetched: {exc}")
                else:
                    self.store.write(FINDINGS_NAME, {"fetched_at": utc_now(), **found.document})
        return answer

    def choose(self, answer: CheckinAnswer, *, operator: bool = False) -> Choice:
        """OPERATOR: an update the operator asked for, which re-applies levels they took out."""
        return choose(
            answer,
            kernel_supported=self.kernel_supported,
            userspace_enabled=self.config.userspace_enabled,
            sticky=self.config.sticky,
            delay_hours=self.config.update_delay_hours,
            now=datetime.now(UTC),
            operator_held=None if operator else self.operator_held(),
        )

    def operator_held(self) -> dict[str, int]:
        """The levels the operator took out, for operator_hold."""
        held = dict(lib_levels.held_levels(self.store))
        kernel = self.kernel.load_state().held if self.kernel_supported else None
        if kernel is not None:
            held[KERNEL_HELD] = kernel
        return held

    def fetch(self, offers: list[Decision]) -> list[Fetched]:
        """Every offered bundle, verified; ServerError before anything is applied if one is bad."""
        trusted = self.context.trusted_keys()
        cache = self.context.bundle_cache
        fetched = []
        with self.recording_errors(), self.client() as client:
            for decision in offers:
                ref = decision.bundle
                assert ref is not None  # an "apply" decision always carries one
                path = cache.path_for(ref.sha256)
                data = path.read_bytes() if path.exists() else None
                if data is None or hashlib.sha256(data).hexdigest() != ref.sha256:
                    data = client.download(ref.url, min(MAX_BUNDLE_BYTES, max(ref.size, 1)))
                fetched.append(Fetched(decision, data, self._verify(decision, data, trusted)))
        for item in fetched:
            cache.store(item.data, trusted)
        return fetched

    def _verify(self, decision: Decision, data: bytes, trusted: Any) -> Bundle:
        ref = decision.bundle
        assert ref is not None
        where = f"bundle {ref.sha256[:16]} for {decision.name}"
        digest = hashlib.sha256(data).hexdigest()
        if digest != ref.sha256:
            raise ServerError(
                f"{where} from the patch server is not the announced file "
                f"(SHA-256 {digest[:16]}); nothing was applied"
            )
        try:
            bundle = open_bundle(data, trusted)
        except BundleError as exc:
            raise ServerError(
                f"{where} from the patch server does not verify: {exc}; nothing was applied"
            ) from None
        target = bundle.manifest.target
        same = (
            target.key == decision.target
            if isinstance(target, UserspaceTarget)
            else decision.kind == "kernel" and target.matches(self.kernel.running)
        )
        if not same or bundle.manifest.level != ref.level:
            raise ServerError(
                f"{where} from the patch server is for {target.key} level "
                f"{bundle.manifest.level}, not what was offered; nothing was applied"
            )
        return bundle

    def apply(self, fetched: list[Fetched], timeout: float) -> list[dict[str, Any]]:
        """Kernel first, then userspace; one report entry per bundle."""
        reports = []
        for item in sorted(fetched, key=lambda f: f.decision.kind != "kernel"):
            if item.decision.kind == "kernel":
                reports.append(self._apply_kernel(item, timeout))
            else:
                reports.append(self.apply_userspace(item.bundle))
        return reports

    def _apply_kernel(self, item: Fetched, timeout: float) -> dict[str, Any]:

        try:
            result = self.kernel.update(item.data, item.bundle, timeout=timeout)
        except KERNEL_FAILURES as exc:
            return {
                "kind": "kernel",
                "target": item.decision.target,
                "action": "failed",
                "level": item.bundle.manifest.level,
                "error": str(exc),
            }
        return {"kind": "kernel", "target": item.decision.target, **apply_document(result)}

    def apply_userspace(self, bundle: Bundle) -> dict[str, Any]:
        """Apply BUNDLE to every process mapping its target and record it; one report entry.

        ``action`` is "failed" if any process was busy or refused it, or if the engine
        refused the bundle itself (``error`` says why; no process was touched).
        """
        try:
            spec, results = lib_levels.apply_bundle(
                self.engine, self.store, bundle, self.config.blocklist
            )
        except EngineError as exc:
            return {
                "kind": "userspace",
                "target": bundle.manifest.target.key,
                "action": "failed",
                "level": bundle.manifest.level,
                "error": str(exc),
            }
        failed = any(r.failed for r in results)
        return {
            "kind": "userspace",
            "target": f"userspace:{spec.build_id}",
            "soname": spec.soname,
            "level": spec.level,
            "bundle_sha256": bundle.sha256,
            "action": "failed" if failed else "applied",
            "processes": [r.to_dict() for r in results],
        }

    # -- state --------------------------------------------------------------------

    def _record(self, answer: CheckinAnswer | None = None, error: str | None = None) -> None:
        with self.store.locked(STATE_NAME):
            document = self.store.read(STATE_NAME)
            if answer is not None:
                document["last_checkin"] = {
                    "at": utc_now(),
                    "server": self.registration.server_url,
                    "feed": answer.feed,
                    "next_checkin_seconds": answer.next_checkin_seconds,
                    "offers": [
                        {"target": d.target, "name": d.name, "level": d.bundle.level}
                        for d in answer.targets
                        if d.bundle is not None and d.action == "apply"
                    ],
                }
                document["packages_digest"] = answer.packages_digest
                document.pop("last_error", None)
            if error is not None:
                document["last_error"] = {"at": utc_now(), "message": error}
            self.store.write(STATE_NAME, document)


def last_checkin(context: AgentContext) -> dict[str, Any]:
    """``online.json``: the last check-in (``last_checkin``) and error (``last_error``), or {}."""
    return context.state.read(STATE_NAME)


def run_update(
    context: AgentContext,
    kinds: set[str],
    notify: Callable[[str], None],
    timeout: float,
    *,
    operator: bool = False,
) -> dict[str, Any]:
    """Check in and apply what is offered for KINDS; the report of what happened.
    OPERATOR: asked for by the operator (``--update``/``--lib-update``), not automatic."""
    agent = OnlineAgent(context, notify)
    answer = agent.check_in()
    choice = agent.choose(answer, operator=operator)
    offers = [d for d in choice.offers if d.kind in kinds]
    fetched = agent.fetch(offers)
    applied = agent.apply(fetched, timeout)
    kinds_applied = {report["kind"] for report in applied}
    if "userspace" in kinds_applied:
        refresh_library_files(context.config.state_dir, agent.engine, context.config.blocklist)
    if "kernel" in kinds_applied:
        refresh_kernel_file(context.config.state_dir, agent.kernel)
    return {
        "server": agent.registration.server_url,
        "feed": answer.feed,
        "applied": applied,
        "held_back": [hold.to_dict() for hold in choice.held if hold.decision.kind in kinds],
        "ignored": [
            {"target": d.target, "name": d.name, "reason": why} for d, why in choice.ignored
        ],
        "up_to_date": [
            {"target": d.target, "name": d.name, "reason": d.reason}
            for d in answer.targets
            if d.action == "none" and d.reason != NO_BUNDLE
        ],
    }
