"""The build driver: sources laid out, fixes applied, the compiler wrapped, failures named."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from nonstop.builders.errors import BuilderError
from nonstop.builders.userspace.driver import BuildDriver
from nonstop.builders.userspace.recipe import load_recipe
from tests.builders.userspace.conftest import LIBVULN, write_recipe


def _recipe(tmp_path: Path, fixes: tuple[str, ...] = ("bounds",)):
    return load_recipe(write_recipe(tmp_path / "recipe", fixes))


def test_function_section_build_keeps_the_library_objects(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    driver = BuildDriver(recipe, tmp_path / "work")
    tree = driver.build("original", (), function_sections=True)
    assert sorted(tree.objects) == ["util.o", "vuln.o"]
    assert tree.library.is_file() and tree.root == tmp_path / "work" / "trees" / "original"
    calls = [
        json.loads(line)
        for line in (tmp_path / "work/logs/original.cc.jsonl").read_text().splitlines()
    ]
    compiles = [c["argv"] for c in calls if "-c" in c["argv"]]
    assert len(compiles) == 2
    for argv in compiles:
        assert argv[-2:] == ["-ffunction-sections", "-fdata-sections"]
        assert f"-ffile-prefix-map={tree.built_at}=." in argv, "the {tree} placeholder"
    # Every stage builds at the same path, so compiled-in paths never differ.
    again = driver.build("level1", recipe.fixes, function_sections=True)
    assert again.built_at == tree.built_at
    assert "index >= count" in (again.root / "vuln.c").read_text()


def test_plain_build_adds_no_flags(tmp_path: Path) -> None:
    driver = BuildDriver(_recipe(tmp_path), tmp_path / "work")
    driver.build("reproduce", (), function_sections=False)
    calls = [
        json.loads(line)
        for line in (tmp_path / "work/logs/reproduce.cc.jsonl").read_text().splitlines()
    ]
    assert calls and not any("-ffunction-sections" in c["argv"] for c in calls)


def test_fix_that_does_not_apply_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.patch"
    bad.write_text(
        (LIBVULN / "fixes" / "bounds.patch").read_text().replace("(void)count;", "(void)cnt;")
    )
    path = write_recipe(tmp_path / "recipe", ("bounds",))
    path.write_text(path.read_text().replace(str(LIBVULN / "fixes" / "bounds.patch"), str(bad)))
    recipe = load_recipe(path)
    with pytest.raises(
        BuilderError, match=r"fix 1 \(bounds check in vuln_get\): bad.patch does not apply"
    ):
        BuildDriver(recipe, tmp_path / "work").build("level1", recipe.fixes, True)


def test_failing_build_names_its_log(tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "recipe", ("bounds",))
    path.write_text(path.read_text().replace('command = "make"', 'command = "make no-such-target"'))
    with pytest.raises(BuilderError) as caught:
        BuildDriver(load_recipe(path), tmp_path / "work").build("original", (), True)
    message = str(caught.value)
    assert "original build failed with status 2" in message
    assert "No rule to make target" in message and "original.log" in message


def test_missing_library_is_named(tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "recipe", ("bounds",))
    path.write_text(
        path.read_text().replace('library = "libvuln.so.1"', 'library = "libvuln.so.2"')
    )
    with pytest.raises(BuilderError, match=r"libvuln.so.2 is not in the tree"):
        BuildDriver(load_recipe(path), tmp_path / "work").build("reproduce", (), False)


def test_tarball_source_with_leading_directory(tmp_path: Path) -> None:
    tarball = tmp_path / "libvuln-1.0.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(LIBVULN, arcname="libvuln-1.0")
    path = write_recipe(tmp_path / "recipe", ("bounds",))
    path.write_text(
        path.read_text().replace(
            f'dir = "{LIBVULN}"', f'tarball = "{tarball}"\nstrip_components = 1'
        )
    )
    recipe = load_recipe(path)
    tree = BuildDriver(recipe, tmp_path / "work").build("original", (), True)
    assert sorted(tree.objects) == ["util.o", "vuln.o"]


def test_foreign_build_directory_is_never_removed(tmp_path: Path) -> None:
    mine = tmp_path / "precious"
    mine.mkdir()
    (mine / "data").write_text("keep me")
    path = write_recipe(tmp_path / "recipe", ("bounds",))
    path.write_text(path.read_text().replace("[build]\n", f'[build]\ndirectory = "{mine}"\n'))
    with pytest.raises(BuilderError, match="was not made by nonstop"):
        BuildDriver(load_recipe(path), tmp_path / "work").build("original", (), True)
    assert (mine / "data").read_text() == "keep me"


def test_objects_of_a_convenience_archive_are_found(tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "recipe", ("bounds",))
    link = (
        "make vuln.o util.o && ar rcs libparts.a vuln.o util.o && rm vuln.o util.o && "
        "$CC -shared -o libvuln.so.1 -Wl,--whole-archive libparts.a -Wl,--no-whole-archive"
    )
    path.write_text(path.read_text().replace('command = "make"', f"command = '{link}'"))
    tree = BuildDriver(load_recipe(path), tmp_path / "work").build("original", (), True)
    assert sorted(tree.objects) == ["libparts.a(util.o)", "libparts.a(vuln.o)"]
    assert all(p.is_file() and p.is_relative_to(tree.root) for p in tree.objects.values())
