"""The main kernel story on Debian's real kernel in QEMU (1 guest CPU), one boot.

The real `nonstopctl` runs inside the guest: level 1 is applied and changes
what /proc/cmdline shows; level 2 replaces it atomically (and adds
/proc/loadavg); bundles for another build and tampered bundles are refused; a
level whose transition a sleeping task blocks times out, is reverted and
names that task; --unload brings the original kernel behaviour back.
"""

from __future__ import annotations

import pytest

from nonstop.builders.kernel.packages import KernelTree
from tests.kernel.conftest import GuestRuns
from tests.kernel.harness import Results

# Guest boots under software emulation: allow for a loaded machine (the default is 600 s).
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def story(guest_runs: GuestRuns) -> Results:
    return guest_runs.story()


def ours(results: Results, snapshot: str) -> dict[str, int]:
    return {
        name: size
        for name, size in results.modules(snapshot).items()
        if name.startswith("nonstop_example")
    }


def test_before_any_patch_the_kernel_is_original(story: Results) -> None:
    assert "nonstop" not in story.text("base", "cmdline")
    assert story.lines("base", "patches") == []
    uname = story.json("uname0")
    assert uname["source"] == "running kernel"
    assert uname["effective_version"] == uname["real_version"]


def test_level1_changes_kernel_behaviour(story: Results) -> None:
    assert story.rc("update1") == 0, story.text("update1", "err")
    update = story.json("update1")
    assert update["action"] == "applied" and update["level"] == 1
    assert update["transition"]["replaced"] == []
    assert story.text("l1", "cmdline") == "nonstop example: level 1\n"
    assert story.lines("l1", "patches") == ["nonstop_example_l1"]
    # /proc/loadavg is level 2's business: untouched so far.
    assert "nonstop" not in story.text("l1", "loadavg")
    assert update["effective_version"].endswith("+nonstop1")


def test_level2_replaces_level1_atomically(story: Results) -> None:
    assert story.rc("update2") == 0, story.text("update2", "err")
    update = story.json("update2")
    assert update["level"] == 2 and update["transition"]["replaced"] == ["nonstop_example_l1"]
    assert story.text("l2", "cmdline") == "nonstop example: level 2\n"
    assert story.text("l2", "loadavg").endswith("nonstop example: level 2\n")
    assert story.lines("l2", "patches") == ["nonstop_example_l2"]
    # Level 1's module is gone: the memory of exactly one patch module remains.
    assert list(ours(story, "l2")) == ["nonstop_example_l2"]
    assert len(story.modules("l2")) == len(story.modules("base")) + 1


def test_level2_reports(story: Results, kernel_tree: KernelTree) -> None:
    info = story.json("info2")
    # The build-id the builder read from the image is the one the guest kernel reports.
    assert info["kernel"]["build_id"] == kernel_tree.build_id
    assert info["kernel"] == {**info["kernel"], "release": kernel_tree.release}
    assert info["level"] == 2 and info["module"] == "nonstop_example_l2"
    assert info["livepatch_supported"] is True
    assert info["transition"] == {"in_progress": False, "patches": []}
    assert info["patches"] == [
        {"name": "nonstop_example_l2", "enabled": True, "transition": False, "objects": ["vmlinux"]}
    ]
    assert info["guard"] == {"state": "clear", "pending": None, "blocked": []}
    assert info["effective_version"].endswith("+nonstop2")
    assert info["effective_version"] != info["kernel"]["version"]
    text = story.text("patchinfo2")
    # kcarectl's key: value form, one block per CVE.
    assert "kpatch-module: nonstop_example_l2" in text and "kpatch-level: 2" in text
    assert "kpatch-cve: CVE-2099-0001" in text and "kpatch-cve: CVE-2099-0002" in text
    assert "kpatch-function: loadavg_proc_show in vmlinux" in text
    assert "kpatch-description: Example fix: /proc/cmdline shows the patch level" in text
    assert "kpatch-cve-url: https://" in text
    assert story.text("uname2").strip() == info["effective_version"]


def test_bundle_for_another_kernel_build_is_refused(story: Results) -> None:
    assert story.rc("other_build") == 5
    assert story.json("other_build")["action"] == "refused"
    error = story.text("other_build", "err")
    assert "bundle is for kernel" in error and "but this host runs" in error
    assert story.lines("refused", "patches") == ["nonstop_example_l2"]


def test_tampered_bundle_is_refused(story: Results) -> None:
    assert story.rc("tampered") == 5
    assert story.json("tampered")["action"] == "refused"
    assert "does not match its SHA-256" in story.text("tampered", "err")
    assert story.text("refused", "cmdline") == "nonstop example: level 2\n"
    assert list(ours(story, "refused")) == ["nonstop_example_l2"]


def test_module_the_kernel_refuses_leaves_everything_as_it_was(story: Results) -> None:
    assert story.rc("broken") == 5
    error = story.text("broken", "err")
    assert "loading module nonstop_broken_l9: EINVAL" in error and error.count("\n") == 1
    assert story.json("broken")["action"] == "refused"
    assert story.lines("refused", "patches") == ["nonstop_example_l2"]
    assert "nonstop_broken_l9" not in story.modules("refused")
    # Neither the level nor the guard remember the failed attempt.
    info = story.json("info_held")
    assert info["level"] == 2 and info["wanted_level"] == 2
    assert info["guard"]["pending"] is None
    assert [entry["level"] for entry in info["guard"]["blocked"]] == [10]  # the warning one


def test_level_that_makes_the_kernel_warn_is_rolled_back_and_blocked(story: Results) -> None:
    assert int(story.text("taint_before_warns")) & (1 << 9) == 0  # no warning before
    assert story.rc("warns") == 5
    assert story.json("warns")["action"] == "rolled_back"
    error = story.text("warns", "err")
    assert "the kernel reported kernel warning (W) while level 10" in error
    assert "level 2 (nonstop_example_l2) restored" in error
    assert story.text("warned", "cmdline") == "nonstop example: level 2\n"
    assert story.lines("warned", "patches") == ["nonstop_example_l2"]
    assert list(ours(story, "warned")) == ["nonstop_example_l2"]
    assert "nonstop_warns_l10" not in story.modules("warned")
    blocked = story.json("info_held")["guard"]["blocked"]
    assert blocked[0]["module"] == "nonstop_warns_l10" and "kernel warning" in blocked[0]["reason"]


def test_blocked_transition_times_out_reverts_and_names_the_task(story: Results) -> None:
    holder = int(story.text("holder", "pid"))
    assert "nonstop_hold_wait" in story.text("holder", "stack")
    assert story.rc("update3") == 5
    document = story.json("update3")
    assert document["action"] == "reverted"
    tasks = document["blocking_tasks"]
    assert [(task["pid"], task["comm"]) for task in tasks] == [(holder, "cat")]
    assert any("nonstop_hold_wait" in frame for frame in tasks[0]["stack"])
    error = story.text("update3", "err")
    assert f"cat (pid {holder})" in error and "reverted" in error
    # Reverted: level 2 still in force, level 3's module gone, state unchanged.
    assert story.text("held", "cmdline") == "nonstop example: level 2\n"
    assert story.text("held", "sysfs") == "nonstop_example_l2 enabled=1 transition=0\n"
    assert list(ours(story, "held")) == ["nonstop_example_l2"]
    info = story.json("info_held")
    assert info["level"] == 2 and info["guard"]["pending"] is None
    assert info["transition"]["in_progress"] is False
    # The held reader was never disturbed: released, it finished normally.
    assert story.text("holder", "out") == "released\n"


def test_unload_brings_the_original_back(story: Results) -> None:
    assert story.rc("unload") == 0, story.text("unload", "err")
    assert [p["patch"] for p in story.json("unload")["patches"]] == ["nonstop_example_l2"]
    assert story.text("unloaded", "cmdline") == story.text("base", "cmdline")
    assert "nonstop" not in story.text("unloaded", "loadavg")
    assert story.lines("unloaded", "patches") == []
    assert ours(story, "unloaded") == {}
    uname = story.json("uname_unloaded")
    assert uname["source"] == "running kernel"
    assert uname["effective_version"] == story.json("uname0")["effective_version"]
    assert "patch level:       none" in story.text("info_unloaded")


def test_force_only_when_asked(story: Results) -> None:
    # The default path above reverted; with --force-transition the same blocked
    # transition is forced through and level 3 (with the hold fix) is in force.
    assert story.rc("forced") == 0, story.text("forced", "err")
    transition = story.json("forced")["transition"]
    assert transition["forced"] is True and transition["replaced"] == []
    assert story.json("update3")["action"] == "reverted"
    assert "nonstop_hold_wait" in story.text("holder2", "stack")
    assert story.text("forced", "cmdline") == "nonstop example: level 3\n"
    assert story.lines("forced", "patches") == ["nonstop_example_l3"]


def test_unload_blocked_by_a_task_in_the_new_code_keeps_the_patch(story: Results) -> None:
    assert story.rc("sleepy") == 0, story.text("sleepy", "err")
    holder = int(story.text("holder3", "pid"))
    assert "sleepy_hold_wait" in story.text("holder3", "stack")
    assert story.rc("unload_held") == 5
    document = story.json("unload_held")
    assert document["action"] == "reverted"
    assert [(task["pid"], task["comm"]) for task in document["blocking_tasks"]] == [(holder, "cat")]
    error = story.text("unload_held", "err")
    assert "disabling nonstop_sleepy_l11 did not finish in 3 s; the patch stays applied" in error
    assert story.text("unload_held", "sysfs") == "nonstop_sleepy_l11 enabled=1 transition=0\n"
    assert "nonstop_sleepy_l11" in story.modules("unload_held")
    # Once the task is gone the unload goes through.
    assert story.rc("unload_sleepy") == 0, story.text("unload_sleepy", "err")
    assert story.lines("unloaded2", "patches") == []
    assert "nonstop_sleepy_l11" not in story.modules("unloaded2")
