"""A QEMU guest running Debian's own kernel, with the host's files and Python inside it.

The guest boots the cached Debian kernel (TCG software emulation: this machine
cannot nest KVM) with a busybox initramfs whose /init loads the virtio and 9p
modules of that same kernel, mounts the host's root read-only and a writable
work directory at the same path, and chroots into the host's root. So the
project's own `.venv` and the real `nonstopctl` run inside the guest, against
the guest kernel's /sys/kernel/livepatch. The scenario is a shell script in
the work directory; everything it reports is written there, and the outcome is
decided from those files, never from QEMU's exit status.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from nonstop.builders.kernel.packages import KernelTree
from nonstop.kernel.modinfo import read_modinfo

BUSYBOX = Path("/bin/busybox")
# What /init needs to mount the host: virtio PCI transport, then 9p over virtio.
GUEST_MODULES = ("virtio_pci", "9pnet_virtio", "9p")
SCENARIO = "scenario.sh"
DONE_MARK = "scenario.exit"
SHARE = "security_model=none,multidevs=remap"


class GuestError(Exception):
    """The guest could not be prepared or did not finish its scenario."""


def module_load_order(tree: KernelTree, wanted: tuple[str, ...] = GUEST_MODULES) -> list[Path]:
    """Module files to insmod, dependencies first (from each module's own `depends=`)."""
    files = {path.stem.replace("-", "_"): path for path in tree.modules_dir.rglob("*.ko")}
    order: list[Path] = []

    def visit(name: str) -> None:
        path = files.get(name)
        if path is None:
            raise GuestError(f"guest module {name} is not in the cached kernel tree")
        if path in order:
            return
        depends = read_modinfo(path.read_bytes()).get("depends") or ""
        for dependency in filter(None, depends.split(",")):
            visit(dependency)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


INIT_TEMPLATE = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
for module in {modules}; do insmod /modules/$module || echo "init: insmod $module failed"; done
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 work /host{work}
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs run /host/run
echo "init: running the scenario"
chroot /host /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME={work} TMPDIR={work}/tmp \\
    PYTHONDONTWRITEBYTECODE=1 NONSTOP_CONFIG={work}/nonstopctl.toml \\
    /bin/sh {work}/{scenario} > /host{work}/scenario.log 2>&1
echo $? > /host{work}/{done}
sync
umount /host{work}
echo "init: scenario finished"
poweroff -f
"""


def build_initramfs(tree: KernelTree, work: Path, output: Path) -> Path:
    """A busybox initramfs whose /init runs WORK/scenario.sh in the host root, chrooted."""
    staging = output.with_suffix(".d")
    shutil.rmtree(staging, ignore_errors=True)
    for sub in ("bin", "proc", "sys", "dev", "modules"):
        (staging / sub).mkdir(parents=True)
    shutil.copy2(BUSYBOX, staging / "bin" / "busybox")
    names = []
    for path in module_load_order(tree):
        shutil.copy2(path, staging / "modules" / path.name)
        names.append(path.name)
    init = staging / "init"
    init.write_text(
        INIT_TEMPLATE.format(modules=" ".join(names), work=work, scenario=SCENARIO, done=DONE_MARK)
    )
    init.chmod(0o755)
    listing = subprocess.run(
        ["find", ".", "-print0"], cwd=staging, capture_output=True, check=True
    ).stdout
    with output.open("wb") as out:
        subprocess.run(
            ["cpio", "--null", "-o", "-H", "newc", "--quiet"],
            cwd=staging,
            input=listing,
            stdout=out,
            check=True,
        )
    shutil.rmtree(staging)
    return output


@dataclass
class GuestRun:
    exit_status: int | None
    """The scenario script's exit status, as the guest wrote it (None: it never finished)."""
    seconds: float
    serial: str
    log: str


def boot(
    tree: KernelTree,
    initramfs: Path,
    work: Path,
    scenario: str,
    *,
    cpus: int = 1,
    timeout: float = 480.0,
) -> GuestRun:
    """Boot the guest once with SCENARIO (shell text) and wait for it to power off."""
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    (work / DONE_MARK).unlink(missing_ok=True)
    (work / SCENARIO).write_text(scenario)
    argv = [
        "qemu-system-x86_64",
        "-accel", "tcg",
        "-cpu", "max",
        "-smp", str(cpus),
        "-m", "512",
        "-nographic", "-no-reboot", "-nodefaults",
        "-serial", "stdio",
        "-kernel", str(tree.vmlinuz),
        "-initrd", str(initramfs),
        "-append", "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init",
        "-virtfs", f"local,path=/,mount_tag=hostroot,{SHARE},readonly=on",
        "-virtfs", f"local,path={work},mount_tag=work,{SHARE}",
    ]  # fmt: skip
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
        serial = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        serial = (exc.stdout or b"").decode(errors="replace") + "\n[host: QEMU timed out]"
    seconds = time.monotonic() - started
    (work / "serial.log").write_text(serial)
    log_path = work / "scenario.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    try:
        status: int | None = int((work / DONE_MARK).read_text().strip())
    except (OSError, ValueError):
        status = None
    return GuestRun(status, seconds, serial, log)
