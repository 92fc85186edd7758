"""The object differ on small sources compiled here: what counts as a change and what does not."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nonstop.builders.userspace.differ import correlate, diff_unit
from nonstop.builders.userspace.elfobj import ObjectFile

FLAGS = ["-O2", "-fPIC", "-ffunction-sections", "-fdata-sections", "-c"]


def compile_pair(tmp_path: Path, old: str, new: str) -> tuple[ObjectFile, ObjectFile]:
    objects = []
    for name, source in (("old", old), ("new", new)):
        path = tmp_path / name / "unit.c"
        path.parent.mkdir()
        path.write_text(source)
        # Compiled from its own directory: __FILE__ is "unit.c" in both builds.
        subprocess.run(["gcc", *FLAGS, "-o", "unit.o", "unit.c"], cwd=path.parent, check=True)
        objects.append(ObjectFile(path.with_suffix(".o")))
    return objects[0], objects[1]


COUNTER = """
int second(int v) { static int calls; calls += v; return calls; }
int third(int v) { %s return v; }
"""


def test_renumbered_static_locals_pair_by_their_users(tmp_path: Path) -> None:
    # A new function-local static of the same name in third() renumbers second()'s "calls.N".
    old, new = compile_pair(
        tmp_path, COUNTER % "", COUNTER % "static int calls; if (++calls > 3) return -v;"
    )
    (old_calls,) = [n for n in old.by_name if n.startswith("calls.")]
    new_calls = sorted(n for n in new.by_name if n.startswith("calls."))
    assert len(new_calls) == 2 and old_calls in new_calls
    pairs = correlate(old, new)
    (seconds,) = [n for n in new_calls if n in pairs]
    assert pairs[seconds] == old_calls
    assert seconds != old_calls, "GCC renumbered second()'s static; pairing must follow its user"
    diff = diff_unit("unit.o", old, new)
    assert diff.changed_functions == ["third"]
    assert diff.changed_data == []
    assert diff.new_data == [n for n in new_calls if n != seconds]


STRINGS = """
const char *a(int v) { return v ? "%s" : "zero"; }
const char *b(int v) { return v ? "bee" : "b-zero"; }
"""


def test_string_literals_compare_by_content_not_label(tmp_path: Path) -> None:
    old, new = compile_pair(tmp_path, STRINGS % "one", STRINGS % "a much longer string")
    diff = diff_unit("unit.o", old, new)
    assert diff.changed_functions == ["a"]


def test_changed_constant_data_is_reported_with_size(tmp_path: Path) -> None:
    old, new = compile_pair(
        tmp_path, "int table[4] = {1, 2, 3, 4};", "int table[5] = {1, 2, 3, 4, 5};"
    )
    assert diff_unit("unit.o", old, new).changed_data == [("table", "size changed 16 -> 20")]


ASSERTS = """
#include <assert.h>
static inline int inner(int v) { assert(v != 7); return v; }
int outer(int v) { assert(v != 9); return inner(v) + 1; }
int later(int v) { %s return v; }
"""


def test_statics_of_one_user_pair_by_content(tmp_path: Path) -> None:
    # outer() holds two __PRETTY_FUNCTION__ statics (its own and inlined inner()'s);
    # an assert added to later() renumbers both.
    old, new = compile_pair(tmp_path, ASSERTS % "", ASSERTS % "assert(v != 3);")
    diff = diff_unit("unit.o", old, new)
    assert diff.changed_functions == ["later"]
    assert diff.changed_data == []
    (added,) = diff.new_data
    assert new.bytes_of(new.by_name[added]) == b"later\0"
