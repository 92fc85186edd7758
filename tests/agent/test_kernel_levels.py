"""Kernel identity and module checks, reports and the agent's refusals, on the host.

The host cannot load modules (no CAP_SYS_MODULE) and runs another kernel than
the Debian one the bundles are built for, so what is checked here is what
happens before any module would be loaded; the guest suite does the rest.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nonstop.agent.api_models import CheckinAnswer
from nonstop.agent.bundle_cache import BundleCache
from nonstop.agent.cli import main as nonstopctl
from nonstop.agent.kernel_levels import (
    KernelManager,
    KernelPatchError,
    WrongKernelError,
    running_version,
)
from nonstop.agent.online import KERNEL_HELD, choose
from nonstop.agent.state import StateStore
from nonstop.builders.kernel.packages import KernelTree
from nonstop.bundle import (
    Bundle,
    FunctionPatch,
    KernelTarget,
    Manifest,
    SigningKey,
    TrustedKeys,
    describe_payload,
    open_bundle,
    pack,
)
from nonstop.kernel.livepatch import (
    LivepatchDriver,
    LivepatchError,
    LoadRefusedError,
    TransitionReport,
    TransitionTimeout,
)
from nonstop.kernel.state import STATE_NAME, KernelState, LevelRef
from tests.kernel.harness import GuestBundles

RELEASE = "6.1.0-56-amd64"
RUNNING = KernelTarget(release=RELEASE, build_id="ab" * 20)


def kernel_bundle(
    signing_key: SigningKey,
    trusted: TrustedKeys,
    target: KernelTarget,
    module: bytes,
    level: int = 1,
) -> Bundle:
    files = {"nonstop_t_l1.ko": module}
    manifest = Manifest(
        kind="kernel",
        target=target,
        level=level,
        functions=(FunctionPatch(target="cmdline_proc_show", object="vmlinux"),),
        payload=(describe_payload("nonstop_t_l1.ko", "module", module),),
        effective_version=f"test+{level}",
        builder="tests",
    )
    return open_bundle(pack(manifest, files, signing_key), trusted)


def manager(tmp_path: Path, trusted: TrustedKeys, running: KernelTarget = RUNNING) -> KernelManager:
    return KernelManager(
        StateStore(tmp_path / "state"),
        BundleCache(tmp_path / "cache"),
        lambda: trusted,
        running,
        driver=LivepatchDriver(sysfs=tmp_path / "no-livepatch"),
        boot_id=lambda: "boot-1",
    )


@pytest.mark.parametrize(
    "target",
    [
        KernelTarget(release=RELEASE, build_id="cd" * 20),
        KernelTarget(release="6.1.0-55-amd64", build_id="ab" * 20),
        KernelTarget(release=RELEASE, version_digest="ef" * 32),
    ],
)
def test_bundle_for_another_kernel_build_is_refused(
    tmp_path: Path, signing_key: SigningKey, trusted: TrustedKeys, target: KernelTarget
) -> None:
    bundle = kernel_bundle(signing_key, trusted, target, b"\x7fELF not reached")
    with pytest.raises(WrongKernelError, match=r"but this host runs kernel 6\.1\.0-56-amd64"):
        manager(tmp_path, trusted).check_bundle(bundle)


def test_version_digest_identity_matches_when_there_is_no_build_id(
    tmp_path: Path, signing_key: SigningKey, trusted: TrustedKeys
) -> None:
    running = KernelTarget(release=RELEASE, version_digest="ef" * 32)
    bundle = kernel_bundle(signing_key, trusted, running, b"not a module")
    with pytest.raises(KernelPatchError, match="bundle module: not a kernel module"):
        manager(tmp_path, trusted, running).check_bundle(bundle)


def test_real_module_checks(
    tmp_path: Path,
    signing_key: SigningKey,
    trusted: TrustedKeys,
    kernel_tree: KernelTree,
    test_bundles: GuestBundles,
) -> None:
    built = open_bundle(test_bundles.level1, trusted)
    running = kernel_tree.target()
    ref, image = manager(tmp_path, trusted, running).check_bundle(built)
    assert (ref.level, ref.module, ref.bundle_sha256) == (1, "nonstop_example_l1", built.sha256)
    assert image == built.payload("module")
    # The same module in a manifest claiming another level: the stamp disagrees.
    relabelled = kernel_bundle(signing_key, trusted, running, image, level=2)
    with pytest.raises(KernelPatchError, match="stamped level 1, the manifest says 2"):
        manager(tmp_path, trusted, running).check_bundle(relabelled)
    # A module built for another release is refused even if the manifest lies.
    other_release = dataclasses.replace(running, release="6.1.0-99-amd64")
    lying = kernel_bundle(signing_key, trusted, other_release, image)
    with pytest.raises(WrongKernelError, match=f"built for kernel {re.escape(running.release)}"):
        manager(tmp_path, trusted, other_release).check_bundle(lying)
    # The holdtarget module is a module, but not a livepatch.
    plain = kernel_bundle(signing_key, trusted, running, test_bundles.holdtarget.read_bytes())
    with pytest.raises(KernelPatchError, match="not a livepatch module"):
        manager(tmp_path, trusted, running).check_bundle(plain)


def test_reports_without_livepatch(tmp_path: Path, trusted: TrustedKeys) -> None:
    version = tmp_path / "version"
    version.write_text(
        "Linux version 6.1.0-56-amd64 (...) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2\n"
    )
    reports = manager(tmp_path, trusted)
    reports.proc_version = version
    info = reports.info()
    assert info["livepatch_supported"] is False and info["patches"] == []
    assert info["level"] is None and info["effective_version"] == "6.1.192-2"
    assert info["guard"] == {"state": "clear", "pending": None, "blocked": []}
    assert reports.uname()["source"] == "running kernel"
    assert reports.patch_info() == {"level": None, "fixes": [], "cves": [], "functions": []}


def test_running_version_parsing() -> None:
    assert running_version("Linux version 6.1.0 #1 SMP Debian 6.1.192-2 (2026)", "r") == "6.1.192-2"
    assert running_version("Linux version 6.18.44 #1 SMP", "6.18.44") == "6.18.44"


def test_nonstopctl_refuses_a_bundle_for_another_kernel(
    tmp_path: Path,
    trusted_dir: Path,
    test_bundles: GuestBundles,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On this host (another kernel) the real CLI refuses the Debian kernel's bundle."""
    config = tmp_path / "nonstopctl.toml"
    config.write_text(
        f'trusted_keys_dir = "{trusted_dir}"\nstate_dir = "{tmp_path}/state"\n'
        f'cache_dir = "{tmp_path}/cache"\n'
    )
    monkeypatch.setenv("NONSTOP_CONFIG", str(config))
    with pytest.raises(SystemExit) as exited:
        nonstopctl(["--json", "--update", "--bundle", str(test_bundles.level1)])
    assert exited.value.code == 5  # a local error
    captured = capsys.readouterr()
    assert json.loads(captured.out)["action"] == "refused"
    assert f"this host runs kernel {platform.release()}" in captured.err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "state" / "kernel.json").exists()
    assert nonstopctl(["--json", "--uname"]) == 0
    assert json.loads(capsys.readouterr().out)["release"] == platform.release()


class FaultyDriver(LivepatchDriver):
    """Injects faults the host cannot produce for real (it cannot load modules)."""

    def __init__(self, sysfs: Path, fault: BaseException) -> None:
        super().__init__(sysfs=sysfs)
        self.fault = fault

    def apply(
        self, image: bytes, name: str, *, timeout: float, force: bool = False
    ) -> TransitionReport:
        raise self.fault


@pytest.mark.parametrize(
    ("fault", "blocks"),
    [
        (TransitionTimeout("timed out; reverted", [], reverted=True), False),
        (LoadRefusedError("loading module x: EINVAL"), False),
        (KeyboardInterrupt(), True),
        (LivepatchError("the reversed transition did not finish either"), True),
    ],
)
def test_only_unclean_failures_leave_the_level_for_the_guard(
    tmp_path: Path,
    trusted: TrustedKeys,
    kernel_tree: KernelTree,
    test_bundles: GuestBundles,
    fault: BaseException,
    blocks: bool,
) -> None:
    agent = manager(tmp_path, trusted, kernel_tree.target())
    agent.driver = FaultyDriver(tmp_path / "no-livepatch", fault)
    data = test_bundles.level1.read_bytes()
    with pytest.raises(type(fault)):
        agent.update(data, open_bundle(data, trusted), timeout=1)
    state = agent.load_state()
    assert state.current is None and state.wanted is None
    assert (state.pending is not None) is blocks
    # The next command under the lock turns a leftover pending level into a block.
    tripped = agent.clear_guard()
    assert [entry.ref.level for entry in tripped] == ([1] if blocks else [])
    if blocks:
        assert "agent stopped while level 1" in tripped[0].reason


def test_a_loaded_level_missing_from_the_state_is_adopted_not_loaded_twice(
    tmp_path: Path, trusted: TrustedKeys, kernel_tree: KernelTree, test_bundles: GuestBundles
) -> None:
    # What sysfs shows with level 1 in force; the state dir was lost.
    patch = tmp_path / "livepatch" / "nonstop_example_l1"
    (patch / "vmlinux").mkdir(parents=True)
    (patch / "enabled").write_text("1\n")
    (patch / "transition").write_text("0\n")
    agent = manager(tmp_path, trusted, kernel_tree.target())
    agent.driver = LivepatchDriver(sysfs=tmp_path / "livepatch")
    data = test_bundles.level1.read_bytes()
    result = agent.update(data, open_bundle(data, trusted), timeout=1)
    assert result.action == "already" and result.ref is not None and result.ref.level == 1
    assert agent.info()["level"] == 1 and agent.load_state().pending is None


@pytest.fixture
def agent_config(tmp_path: Path, trusted_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "nonstopctl.toml"
    config.write_text(
        f'trusted_keys_dir = "{trusted_dir}"\nstate_dir = "{tmp_path}/state"\n'
        f'cache_dir = "{tmp_path}/cache"\nauto_update = false\n'
    )
    monkeypatch.setenv("NONSTOP_CONFIG", str(config))
    return config


def test_auto_update_honours_the_configuration(
    agent_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nonstopctl(["--json", "--auto-update"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["action"] == "skipped" and "auto_update is off" in document["message"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--update"], "--update needs --bundle FILE"),
        (["--update", "--bundle", "x.nsb", "--transition-timeout", "0"], "must be positive"),
        (["--update", "--bundle", "/nonexistent.nsb"], "bundle file not found"),
    ],
)
def test_bad_update_arguments_get_one_line(
    agent_config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        nonstopctl(argv)
    assert exited.value.code == 5  # a local error
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_an_unloaded_kernel_level_stays_out_of_automatic_updates(
    tmp_path: Path, trusted: TrustedKeys
) -> None:
    """--unload holds the level it took out: the server's offer of it (or lower) is held back
    until the operator updates again or a higher level is offered."""
    agent = manager(tmp_path, trusted)
    ref = LevelRef(2, "22" * 32, "nonstop_t_l2", "test+2")
    agent.store.write(STATE_NAME, KernelState(current=ref, wanted=ref).to_dict())
    agent.unload(timeout=1.0)
    state = agent.load_state()
    assert (state.held, state.current, state.wanted) == (2, None, None)

    def offered(level: int, held: dict[str, int] | None) -> tuple[list[int], list[str]]:
        answer = CheckinAnswer.parse(
            {
                "host_id": "1f" * 16, "checkin_id": "0b5e8f4e-6d1c-4f0a-9b7e-2c3d4e5f6a7b",
                "recorded": True, "feed": "stable", "server_time": "2026-11-26T07:29:50Z",
                "next_checkin_seconds": 3600,
                "targets": [{
                    "target": f"kernel:{RELEASE}:" + "ab" * 20, "kind": "kernel",
                    "name": RELEASE, "applied_level": None, "action": "apply",
                    "reason": f"level {level} available",
                    "bundle": {
                        "sha256": "c9" * 32, "level": level, "size": 100,
                        "effective_version": f"test+{level}", "url": "/api/v1/bundles/x",
                        "published_at": "2026-11-20T10:00:00Z",
                    },
                }],
            }
        )  # fmt: skip
        choice = choose(
            answer, kernel_supported=True, userspace_enabled=True, sticky=None,
            delay_hours=0, now=datetime(2026, 11, 26, tzinfo=UTC), operator_held=held,
        )  # fmt: skip
        return [d.bundle.level for d in choice.offers if d.bundle], [h.reason for h in choice.held]

    held = {KERNEL_HELD: 2}
    offers, reasons = offered(2, held)
    assert offers == [] and "took level 2 out (--unload" in reasons[0]
    assert offered(1, held)[0] == []
    assert offered(3, held) == ([3], [])  # a newer level ends the hold
    assert offered(2, None) == ([2], [])  # the operator's own --update applies it again
    # A second unload with nothing applied keeps the hold.
    agent.unload(timeout=1.0)
    assert agent.load_state().held == 2
