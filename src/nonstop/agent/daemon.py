"""`nonstopctl --daemon`: the long-running agent service.

1. **Boot re-apply, before any network access**: the cached, verified kernel
   level (crash-loop guard respected; only when ``auto_update`` is on), then
   every recorded userspace level to every process mapping its target.
2. **New processes**: exec events from the proc connector (``exec_watch``);
   each new process is followed for a short window until ld.so has relocated
   the patched library (``new_processes``), then patched. Events lost, or no
   connector: the periodic /proc rescan catches up.
3. **Periodic auto-update** every ``daemon_interval_hours`` (+-10 % jitter):
   a child ``nonstopctl --auto-update`` checks in, downloads, verifies and
   applies, so network code and its imports never live in the daemon and the
   daemon keeps answering exec events meanwhile; afterwards the daemon reloads
   the recorded levels.

SIGTERM/SIGINT stop it (a patch in progress finishes first: signals only set
a flag, read between operations). SIGHUP reloads the configuration and the
recorded levels, rescans, and starts an auto-update now.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from types import FrameType

from nonstop.agent import kernel_levels, lib_levels
from nonstop.agent.actions import AgentContext
from nonstop.agent.config import ConfigError, load_config
from nonstop.agent.exec_watch import EventsLost, ExecWatcher, ExecWatchUnavailable
from nonstop.agent.new_processes import (
    RESCAN_MIN_AGE,
    Followed,
    NewProcessQueue,
    RelroCache,
    all_process_maps,
    executable_path,
    mapped_files,
    readable_maps,
    relocated,
)
from nonstop.agent.state import StateError
from nonstop.console import printable
from nonstop.userspace import PatchSpec
from nonstop.userspace.procfs import Mapping, list_pids, start_time
from nonstop.userspace.region import memfd_name

JITTER = 0.1
FIRST_CYCLE_MAX_DELAY = 60.0
"""The first auto-update after start waits a random 0-60 s: a fleet rebooting at once spreads."""
CHILD_TIMEOUT = 3600.0
MAX_BUSY_TRIES = 5
NONSTOPCTL = [sys.executable, "-c", "from nonstop.agent.cli import main; raise SystemExit(main())"]


def log(message: str) -> None:
    """One line on stderr (the journal), control characters escaped: messages carry names from
    other processes.
    """
    sys.stderr.write(f"nonstopctl daemon: {printable(message)}\n")
    sys.stderr.flush()


def jittered(seconds: float) -> float:
    """SECONDS times a random factor in [0.9, 1.1], so hosts started together drift apart."""
    return seconds * random.uniform(1 - JITTER, 1 + JITTER)


def has_level(maps: list[Mapping], build_id: str, level: int) -> bool:
    """PID already shows patch memory of this level for this target (the engine double-checks)."""
    name = f"/memfd:{memfd_name(build_id, level)}"
    return any(m.path.removesuffix(" (deleted)") == name for m in maps)


@dataclass
class Outcome:
    """What the daemon did with one (process, level): not retried once decided."""

    result: str
    tries: int = 1


class Daemon:
    """One ``nonstopctl --daemon`` run.

    ``wanted`` holds the recorded userspace levels, verified once and reloaded
    whenever ``userspace.json`` is replaced; ``outcomes`` remembers per (pid, start
    time, build-id, level) what happened, so a refusal is not retried; at most one
    auto-update child runs at a time.
    """

    def __init__(self, context: AgentContext) -> None:
        self.context = context
        self.config = context.config
        self.engine = lib_levels.engine_for(context)
        self.relro = RelroCache()
        self.queue = NewProcessQueue()
        self.wanted: dict[str, PatchSpec] = {}
        self.wanted_stamp: tuple[int, int] | None = None
        self.outcomes: dict[tuple[int, int, str, int], Outcome] = {}
        self.stopping = False
        self.reload_asked = False
        self.child: subprocess.Popen[bytes] | None = None
        self.child_started = 0.0
        self.watcher: ExecWatcher | None = None
        self.patched_new = 0

    # -- lifecycle ------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT, then return 0. Main thread only.

        Installs SIGTERM/SIGINT/SIGHUP handlers and a signal wakeup fd for its
        duration and restores the previous ones on return; a running auto-update
        child is given 30 s to finish, then terminated.
        """
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_wakeup = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        # SIGCHLD keeps its default: ptrace stops of patched threads raise it too.
        handlers = {
            signal.SIGTERM: self._stop,
            signal.SIGINT: self._stop,
            signal.SIGHUP: self._reload,
        }
        previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
        try:
            self.restore()
            try:
                self.watcher = ExecWatcher()
            except ExecWatchUnavailable as exc:
                log(f"{exc}; new processes are found by the /proc rescan only")
            log(
                f"running: {len(self.wanted)} userspace target(s), rescan every "
                f"{self.config.daemon_rescan_seconds:g} s, auto-update every "
                f"{self.config.daemon_interval_hours:g} h"
            )
            self._loop(wake_read)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            signal.set_wakeup_fd(previous_wakeup)
            os.close(wake_read)
            os.close(wake_write)
            if self.watcher is not None:
                self.watcher.close()
            self._finish_child()
        log("stopped")
        return 0

    def _stop_requested(self) -> bool:
        return self.stopping

    def _stop(self, number: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _reload(self, number: int, frame: FrameType | None) -> None:
        self.reload_asked = True

    def _loop(self, wake_read: int) -> None:
        now = time.monotonic()
        next_rescan = now + self.config.daemon_rescan_seconds
        next_cycle = self._first_cycle(now)
        while not self.stopping:
            now = time.monotonic()
            deadlines = [next_rescan, next_cycle]
            followed = self.queue.next_deadline()
            if followed is not None:
                deadlines.append(followed)
            timeout = max(0.0, min(deadlines) - now)
            lost = self._wait(wake_read, timeout)
            if self._stop_requested():
                break
            now = time.monotonic()
            if self.reload_asked:
                self.reload_asked = False
                self._reload_now()
                next_cycle = now if self.config.auto_update else float("inf")
                lost = True
            for item in self.queue.due(now):
                try:
                    self._check_new(item, now)
                except Exception as exc:  # one process never stops the daemon
                    self.queue.drop(item)
                    log(f"pid {item.pid}: new process skipped ({type(exc).__name__})")
            if lost or now >= next_rescan:
                self.rescan()
                next_rescan = time.monotonic() + self.config.daemon_rescan_seconds
            if self.child is not None and self._child_done():
                self.load_wanted()
                next_cycle = self._next_cycle()
            elif self.child is None and now >= next_cycle:
                self._start_child()
                next_cycle = float("inf")  # set again when the child is done

    def _first_cycle(self, now: float) -> float:
        if not self.config.auto_update:
            return float("inf")
        return now + random.uniform(
            0, min(FIRST_CYCLE_MAX_DELAY, self.config.daemon_interval_hours * 3600)
        )

    def _next_cycle(self) -> float:
        if not self.config.auto_update:
            return float("inf")
        return time.monotonic() + jittered(self.config.daemon_interval_hours * 3600)

    def _wait(self, wake_read: int, timeout: float) -> bool:
        """Wait for exec events, a signal or TIMEOUT; queue exec'd pids; True if events lost."""
        sources = [wake_read] + ([self.watcher.fileno()] if self.watcher else [])
        # A running auto-update child is polled at least once a second.
        if self.child is not None:
            timeout = min(timeout, 1.0)
        ready, _, _ = select.select(sources, [], [], timeout)
        if wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_read, 512):
                    pass
        if self.watcher is None or self.watcher.fileno() not in ready:
            return False
        now = time.monotonic()
        try:
            pids = self.watcher.wait(0)
        except (EventsLost, OSError) as exc:
            log(f"exec events: {exc}: rescanning")
            return True
        own = os.getpid()
        for pid in pids:
            if pid != own and (self.child is None or pid != self.child.pid):
                self.queue.add(pid, now)
        return False

    def _reload_now(self) -> None:
        try:
            config = load_config(self.context.args.config)
        except (ConfigError, StateError) as exc:  # keep running on the old configuration
            log(f"configuration not reloaded: {exc}")
        else:
            self.config = config
            self.context = replace(self.context, config=config)
            log("configuration reloaded")
        self.load_wanted()

    # -- levels -----------------------------------------------------------------------

    def restore(self) -> None:
        """Boot re-apply: kernel first (if auto_update is on), then userspace, from the verified
        cache only."""
        if not self.config.auto_update:
            log("auto_update is off: no kernel re-apply and no periodic update")
        else:
            result, error = kernel_levels.restore(self.context)
            if result is None:
                log(f"kernel: {error}")
            else:
                for line in kernel_levels.apply_lines(result) or [f"kernel: {result.action}"]:
                    log(line)
        self.load_wanted()
        self.rescan()

    def _levels_stamp(self) -> tuple[int, int] | None:
        """Identity of the recorded levels' file: every write replaces it (a new inode)."""
        try:
            found = os.stat(self.context.state.path(lib_levels.STATE_NAME))
        except OSError:
            return None
        return found.st_ino, found.st_mtime_ns

    def load_wanted(self) -> None:
        """The recorded userspace levels, each verified again from the cache.

        An unreadable record or trusted-keys directory keeps the levels known so far (logged):
        the daemon goes on, and the next change of the record is read again."""
        from nonstop.bundle.errors import BundleError
        from nonstop.userspace.errors import RefusedError

        self.wanted_stamp = self._levels_stamp()
        wanted: dict[str, PatchSpec] = {}
        if self.config.userspace_enabled:
            try:
                trusted = self.context.trusted_keys()
                levels = lib_levels.wanted_levels(self.context.state)
            except (BundleError, StateError) as exc:
                log(f"recorded levels not read, keeping those known: {exc}")
                return
            for level in levels:
                known = self.wanted.get(level.build_id)
                if known is not None and known.info.get("bundle_sha256") == level.bundle_sha256:
                    wanted[level.build_id] = known
                    continue
                try:
                    wanted[level.build_id] = lib_levels.load_spec(
                        self.context.bundle_cache, trusted, level
                    )
                except (BundleError, RefusedError) as exc:
                    log(f"level {level.level} of {level.build_id[:16]} not usable: {exc}")
        self.wanted = wanted

    # -- patching processes ---------------------------------------------------------------

    def _check_new(self, item: Followed, now: float) -> None:
        """One look at a freshly exec'd process: patch, wait a little longer, or let go."""
        maps = readable_maps(item.pid)
        if maps is None or not self.wanted:
            self.queue.drop(item)
            return
        files = mapped_files(item.pid, maps, self.engine.build_ids)
        exe = executable_path(item.pid).removesuffix(" (deleted)")
        exe_file = next(
            (f for f in files if f.mappings[0].path.removesuffix(" (deleted)") == exe), None
        )
        startup_done = (
            relocated(exe_file, self.relro.get(exe_file.build_id, exe_file.opener))
            if exe_file
            else None
        )
        targets = [f for f in files if f.build_id in self.wanted and f is not exe_file]
        if not targets:
            if startup_done:
                self.queue.drop(item)  # started without the target (a later dlopen: rescan)
            else:
                self.queue.later(item, now)
            return
        waiting = False
        for target in targets:
            spec = self.wanted[target.build_id]
            if has_level(maps, spec.build_id, spec.level):
                continue
            ready = relocated(target, self.relro.get(target.build_id, target.opener))
            if ready is None:
                continue  # no RELRO to watch: the rescan patches it once it is older
            if not ready or startup_done is False:
                waiting = True
                continue
            self._patch(item.pid, item.start, spec, exec_seen=item.seen_at)
        if waiting:
            self.queue.later(item, now)
        else:
            self.queue.drop(item)

    def rescan(self) -> None:
        """Patch every process that maps a wanted target without its level (one pass of /proc).

        A process younger than RESCAN_MIN_AGE may still be in ld.so: it goes to the
        new-process queue, which waits for relocation to finish."""
        if not self.wanted or not self.config.userspace_enabled:
            return
        uptime = _uptime()
        ticks = os.sysconf("SC_CLK_TCK")
        for pid, maps in all_process_maps({self.child.pid} if self.child else set()):
            try:
                started = start_time(pid)
            except (OSError, IndexError, ValueError):
                continue
            if uptime - started / ticks < RESCAN_MIN_AGE:
                self.queue.add(pid, time.monotonic())
                continue
            try:
                for file in mapped_files(pid, maps, self.engine.build_ids):
                    spec = self.wanted.get(file.build_id)
                    if spec is not None and not has_level(maps, spec.build_id, spec.level):
                        self._patch(pid, started, spec)
            except Exception as exc:  # one process never stops the rescan of the others
                log(f"pid {pid}: skipped in this rescan ({type(exc).__name__})")

    def _patch(self, pid: int, started: int, spec: PatchSpec, exec_seen: float = 0.0) -> None:
        key = (pid, started, spec.build_id, spec.level)
        known = self.outcomes.get(key)
        # A refusal is final for this process and level, busy is retried a few times;
        # a process that lost its patch (unloaded by hand) gets it again.
        if known is not None and (
            known.result in ("refused", "gone")
            or (known.result == "busy" and known.tries >= MAX_BUSY_TRIES)
        ):
            return
        if self._levels_stamp() != self.wanted_stamp:
            # nonstopctl changed the recorded levels (--lib-unload records first, then reverts):
            # what it took out must not come back through a rescan already under way.
            self.load_wanted()
            if self.wanted.get(spec.build_id) is not spec:
                return
        (result,) = lib_levels.apply_to_processes(self.engine, spec, self.config.blocklist, [pid])
        self.outcomes[key] = Outcome(result.result, (known.tries + 1) if known else 1)
        latency = ""
        if exec_seen:
            latency = f", {1000 * (time.monotonic() - exec_seen):.1f} ms after exec"
        detail = f": {result.reason}" if result.reason and result.result != "patched" else ""
        log(
            f"pid {pid} ({result.executable}): {spec.soname} level {spec.level} "
            f"{result.result}{latency}{detail}"
        )
        if result.result == "patched" and exec_seen:
            self.patched_new += 1
        self._forget_dead()

    def _forget_dead(self) -> None:
        if len(self.outcomes) > 4096:
            alive = set(list_pids())
            self.outcomes = {k: v for k, v in self.outcomes.items() if k[0] in alive}

    # -- the periodic auto-update, as a child process ---------------------------------------

    def _start_child(self) -> None:
        argv = [*NONSTOPCTL, "--auto-update"]
        if self.context.args.config:
            argv += ["--config", str(self.context.args.config)]
        log("auto-update: starting")
        self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr)
        self.child_started = time.monotonic()

    def _child_done(self) -> bool:
        assert self.child is not None
        code = self.child.poll()
        if code is None:
            if time.monotonic() - self.child_started < CHILD_TIMEOUT:
                return False
            log("auto-update: still running after an hour, stopping it")
            self.child.terminate()
            code = self.child.wait()
        log(f"auto-update: finished with exit status {code}")
        self.child = None
        return True

    def _finish_child(self) -> None:
        """On stop: let a running auto-update finish its patch (bounded), then stop it."""
        if self.child is None:
            return
        try:
            self.child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.child.terminate()
            self.child.wait()
        self.child = None


def _uptime() -> float:
    with open("/proc/uptime") as handle:
        return float(handle.read().split()[0])
