"""Session fixtures for the kernel suite's guest runs (kernel and bundles: tests/conftest.py).

Guest scenarios are grouped per boot (several checks per boot) to keep the
whole suite within its time budget; each test then asserts on what its boot
recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from nonstop.builders.kernel.packages import KernelTree
from tests.kernel import harness, scenarios
from tests.kernel.guest import GuestError, GuestRun, boot


class Guest:
    """One guest work directory (state persists across its boots) and its initramfs."""

    def __init__(self, work: Path, tree: KernelTree, initramfs: Path) -> None:
        self.work = work
        self.tree = tree
        self.initramfs = initramfs
        self.results = harness.Results(work)

    def boot(self, body: str, *, cpus: int) -> GuestRun:
        text = harness.scenario(self.work, body)
        run = boot(self.tree, self.initramfs, self.work, text, cpus=cpus)
        print(f"guest boot ({cpus} CPU) in {self.work.name}: {run.seconds:.1f} s")
        return run


def _failed(what: str, run: GuestRun) -> GuestError:
    return GuestError(
        f"{what}\n--- scenario log ---\n{run.log}\n--- serial ---\n{run.serial[-3000:]}"
    )


def run_story(guest: Guest) -> harness.Results:
    run = guest.boot(scenarios.STORY, cpus=1)
    if run.exit_status != 0:
        raise _failed("the story scenario did not finish", run)
    return guest.results


def run_crash(guest: Guest) -> harness.Results:
    first = guest.boot(scenarios.CRASH_BEFORE, cpus=2)
    # The first boot must end by the reset, with its scenario unfinished.
    if first.exit_status is not None or (guest.work / "out" / "not_reset.out").exists():
        raise _failed("the guest was not reset mid-transition", first)
    second = guest.boot(scenarios.CRASH_AFTER, cpus=2)
    if second.exit_status != 0:
        raise _failed("the boot after the crash did not finish", second)
    third = guest.boot(scenarios.DAEMON_BOOT, cpus=2)
    if third.exit_status != 0:
        raise _failed("the daemon's boot did not finish", third)
    return guest.results


class GuestRuns:
    """The guest boot sequences, started together: each is one QEMU at a time, so two
    sequences keep both host CPUs busy and the suite takes about as long as the longer one."""

    def __init__(self, story: Future[harness.Results], crash: Future[harness.Results]) -> None:
        self._story = story
        self._crash = crash

    def story(self) -> harness.Results:
        return self._story.result()

    def crash(self) -> harness.Results:
        return self._crash.result()


@pytest.fixture(scope="session")
def guest_runs(
    kernel_tree: KernelTree,
    trusted_dir: Path,
    test_bundles: harness.GuestBundles,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GuestRuns]:
    guests = []
    for name in ("story", "crash"):
        work = tmp_path_factory.mktemp(f"guest-{name}")
        initramfs = harness.prepare_work(work, kernel_tree, trusted_dir, test_bundles)
        guests.append(Guest(work, kernel_tree, initramfs))
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield GuestRuns(pool.submit(run_story, guests[0]), pool.submit(run_crash, guests[1]))
