"""Putting patches on the original tree (and its build-time copies) and taking them off;
the objects of a link, convenience archives included; replayed compilations."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nonstop.builders.debian.applying import PatchedTree, Step
from nonstop.builders.debian.replay import archive_members, library_objects, replay_argv
from nonstop.builders.errors import BuilderError
from nonstop.builders.userspace.compilelog import Invocation


def diff(path: str, old: str, new: str) -> str:
    return f"--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def step(
    tmp_path: Path, name: str, text: str, files: tuple[str, ...], reverse: bool = False
) -> Step:
    patch = tmp_path / f"{name}.patch"
    patch.write_text(text)
    return Step(name, name, patch, 1, files, reverse)


def tree_with(
    tmp_path: Path, files: dict[str, str], compiled: frozenset[str] = frozenset()
) -> PatchedTree:
    root = tmp_path / "tree"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return PatchedTree(root, tmp_path / "originals", compiled)


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


def test_a_patched_file_no_compilation_reads_is_written_to_the_copies_the_build_compiles(
    tmp_path: Path,
) -> None:
    # expat: debian/rules copies expat/ into src/ and srcw/, and the build compiles those.
    files = {"expat/lib/x.c": "one", "src/lib/x.c": "one", "srcw/lib/x.c": "one"}
    files |= {"other/x.c": "one", "src/lib/y.c": "one"}  # not compiled / another name
    tree = tree_with(tmp_path, files, frozenset({"src/lib/x.c", "srcw/lib/x.c", "src/lib/y.c"}))
    fix = step(tmp_path, "fix", diff("expat/lib/x.c", "one", "two"), ("expat/lib/x.c",))
    assert tree.apply(fix) is None
    assert tree.copies("expat/lib/x.c") == ["src/lib/x.c", "srcw/lib/x.c"]
    assert tree.changed_files() == ["expat/lib/x.c", "src/lib/x.c", "srcw/lib/x.c"]
    assert (tree.tree / "srcw/lib/x.c").read_text() == "two\n"
    assert (tree.originals / "srcw/lib/x.c").read_text() == "one\n"  # the "before" source
    tree.reset()
    assert {(tree.tree / name).read_text() for name in files} == {"one\n"}

    # A file the build compiles itself has no copies, even if another file has its bytes.
    both = frozenset({"a/x.c", "b/x.c"})
    direct = tree_with(tmp_path / "direct", {"a/x.c": "one", "b/x.c": "one"}, both)
    assert direct.apply(step(tmp_path, "fix2", diff("a/x.c", "one", "two"), ("a/x.c",))) is None
    assert direct.copies("a/x.c") == [] and direct.changed_files() == ["a/x.c"]


def archive_and_calls(tmp_path: Path, whole: bool) -> tuple[Invocation, list[Invocation]]:
    """A libtool-style convenience archive of two objects (one with a long name) and the
    compilations and link that made and used it."""
    libs = tmp_path / "lib" / ".libs"
    libs.mkdir(parents=True)
    names = ["short.o", "a_name_longer_than_sixteen.o"]
    for name in names:
        (libs / name).write_bytes(f"object {name}".encode())
        (libs.parent / name.replace(".o", ".c")).write_text("int x;\n")
    subprocess.run(["ar", "cr", str(libs / "libinternal.a"), *names], cwd=libs, check=True)
    compiles = [
        Invocation(libs.parent, ("-c", name.replace(".o", ".c"), "-fPIC", "-o", f".libs/{name}"))
        for name in names
    ]
    wrapped = ("-Wl,--whole-archive", ".libs/libinternal.a", "-Wl,--no-whole-archive")
    archive = wrapped if whole else (".libs/libinternal.a",)
    link = Invocation(libs.parent, ("-shared", *archive, "-lm", "-o", ".libs/libx.so.1"))
    return link, [*compiles, link]


def test_a_whole_convenience_archive_gives_the_objects_its_members_copy(tmp_path: Path) -> None:
    link, calls = archive_and_calls(tmp_path, whole=True)
    assert [name for name, _ in archive_members(tmp_path / "lib/.libs/libinternal.a")] == [
        "short.o",
        "a_name_longer_than_sixteen.o",
    ]
    objects = library_objects(link, calls, tmp_path)
    assert [item.key for item in objects] == [
        "lib/.libs/short.o",
        "lib/.libs/a_name_longer_than_sixteen.o",
    ]
    assert objects[0].call == calls[0]

    (tmp_path / "lib/.libs/short.o").write_bytes(b"compiled again since")
    with pytest.raises(BuilderError, match=r"member short\.o of lib/\.libs/libinternal\.a is no"):
        library_objects(link, calls, tmp_path)


def test_an_archive_linked_without_whole_archive_is_refused(tmp_path: Path) -> None:
    link, calls = archive_and_calls(tmp_path, whole=False)
    with pytest.raises(BuilderError, match="without --whole-archive"):
        library_objects(link, calls, tmp_path)


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
