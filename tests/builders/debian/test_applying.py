"""Putting patches on the original tree and taking them off; replayed compilations."""

from __future__ import annotations

from pathlib import Path

from nonstop.builders.debian.applying import PatchedTree, Step
from nonstop.builders.debian.replay import replay_argv
from nonstop.builders.userspace.compilelog import Invocation


def diff(path: str, old: str, new: str) -> str:
    return f"--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def step(
    tmp_path: Path, name: str, text: str, files: tuple[str, ...], reverse: bool = False
) -> Step:
    patch = tmp_path / f"{name}.patch"
    patch.write_text(text)
    return Step(name, patch, 1, files, reverse)


def tree_with(tmp_path: Path, files: dict[str, str]) -> PatchedTree:
    root = tmp_path / "tree"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return PatchedTree(root, tmp_path / "originals")


def test_steps_apply_in_an_order_that_works_and_reset_restores_the_original(
    tmp_path: Path,
) -> None:
    tree = tree_with(tmp_path, {"a.c": "one"})
    # The second patch only applies after the first: tried in series order it fails, then
    # it is retried after the others.
    second = step(tmp_path, "second", diff("a.c", "two", "three"), ("a.c",))
    first = step(tmp_path, "first", diff("a.c", "one", "two"), ("a.c",))
    new_file = step(tmp_path, "new", "--- /dev/null\n+++ b/n.c\n@@ -0,0 +1 @@\n+fresh\n", ("n.c",))
    order, failure = tree.apply_in_some_order([second, first, new_file])
    assert failure is None
    assert [s.label for s in order] == ["first", "new", "second"]
    assert (tree.tree / "a.c").read_text() == "three\n"
    assert tree.changed_files() == ["a.c", "n.c"]
    assert (tree.originals / "a.c").read_text() == "one\n"  # the analysis reads originals here

    tree.reset()
    assert (tree.tree / "a.c").read_text() == "one\n"
    assert not (tree.tree / "n.c").exists()
    assert tree.changed_files() == []


def test_a_step_that_does_not_apply_changes_nothing_and_says_why(tmp_path: Path) -> None:
    tree = tree_with(tmp_path, {"a.c": "one", "b.c": "bee"})
    good = step(tmp_path, "good", diff("b.c", "bee", "wasp"), ("b.c",))
    bad = step(tmp_path, "bad", diff("a.c", "something else", "two"), ("a.c",))
    order, failure = tree.apply_in_some_order([good, bad])
    assert [s.label for s in order] == ["good"]
    assert failure is not None and failure.startswith("bad: ")
    assert "FAILED" in failure
    assert (tree.tree / "a.c").read_text() == "one\n"  # dry-run first: no half-applied hunk


def test_a_changed_patch_is_taken_off_in_its_old_version_before_the_new_goes_on(
    tmp_path: Path,
) -> None:
    tree = tree_with(tmp_path, {"a.c": "old fix"})  # the --from tree has the old version applied
    old_off = step(tmp_path, "old", diff("a.c", "bug", "old fix"), ("a.c",), reverse=True)
    new_on = step(tmp_path, "new", diff("a.c", "bug", "new fix"), ("a.c",))
    assert tree.apply_in_some_order([old_off, new_on]) == ([old_off, new_on], None)
    assert (tree.tree / "a.c").read_text() == "new fix\n"


def test_a_replayed_compilation_keeps_the_flags_and_drops_only_output_and_dependencies() -> None:
    call = Invocation(
        Path("/build/x"),
        ("-DHAVE_CONFIG_H", "-I.", "-O2", "-MT", "a.lo", "-MD", "-MP", "-MF", ".deps/a.Tpo",
         "-c", "a.c", "-fPIC", "-o", ".libs/a.o"),
    )  # fmt: skip
    argv = replay_argv(call, Path("/work/a.o"))
    assert argv == [
        "-DHAVE_CONFIG_H", "-I.", "-O2", "-c", "a.c", "-fPIC", "-o", "/work/a.o",
        "-ffunction-sections", "-fdata-sections", "-g",
    ]  # fmt: skip
    with_debug = Invocation(Path("/b"), ("-g", "-O2", "-c", "a.c", "-oa.o"))
    assert replay_argv(with_debug, Path("/w.o")).count("-g") == 1
    assert with_debug.output() == Path("/b/a.o")
