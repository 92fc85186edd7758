"""Session fixtures for the kernel suite: the Debian kernel, the test bundles, guest runs.

Guest scenarios are grouped per boot (several checks per boot) to keep the
whole suite within its time budget; each test then asserts on what its boot
recorded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nonstop.build.kernel_packages import KernelTree
from tests.kernel import harness
from tests.kernel.guest import GuestRun, boot


def _missing_tools() -> list[str]:
    tools = ["qemu-system-x86_64", "cpio", "busybox", "apt-get", "dpkg-deb", "make", "gcc"]
    return [tool for tool in tools if shutil.which(tool) is None]


@pytest.fixture(scope="session")
def kernel_tree() -> KernelTree:
    missing = _missing_tools()
    if missing:
        pytest.skip(f"KERNEL SUITE NOT RUN: missing {', '.join(missing)} (make test installs them)")
    if os.geteuid() != 0:
        pytest.skip("KERNEL SUITE NOT RUN: needs root to fetch kernel packages and run guests")
    return harness.kernel_tree()


@pytest.fixture(scope="session")
def test_bundles(
    kernel_tree: KernelTree, key_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> harness.TestBundles:
    return harness.build_bundles(kernel_tree, key_dir, tmp_path_factory.mktemp("kernel-bundles"))


class Guest:
    """One guest work directory (state persists across its boots) and its initramfs."""

    def __init__(self, work: Path, tree: KernelTree, initramfs: Path) -> None:
        self.work = work
        self.tree = tree
        self.initramfs = initramfs
        self.results = harness.Results(work)

    def boot(self, body: str, *, cpus: int = 1) -> GuestRun:
        run = boot(self.tree, self.initramfs, self.work, harness.scenario(self.work, body), cpus=cpus)
        print(f"guest boot ({cpus} CPU): {run.seconds:.1f} s, scenario exit {run.exit_status}")
        return run


@pytest.fixture(scope="module")
def make_guest(
    kernel_tree: KernelTree,
    trusted_dir: Path,
    test_bundles: harness.TestBundles,
    tmp_path_factory: pytest.TempPathFactory,
) -> Guest:
    work = tmp_path_factory.mktemp("guest")
    initramfs = harness.prepare_work(work, kernel_tree, trusted_dir, test_bundles)
    return Guest(work, kernel_tree, initramfs)
