"""Recipe parsing: a good recipe reads back whole; every mistake is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.builders.errors import RecipeError
from nonstop.builders.userspace.recipe import load_recipe
from tests.builders.userspace.conftest import LIBVULN, write_recipe


def test_recipe_reads_back(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path, ("bounds", "inline")))
    assert recipe.name == "libvuln"
    assert recipe.source.directory == LIBVULN
    assert recipe.build.command == "make" and recipe.build.library == "libvuln.so.1"
    assert recipe.compiler.cc == "gcc" and "{tree}" in (recipe.compiler.cflags or "")
    assert recipe.target.build_is_target
    assert [(f.number, f.cves, f.patch.name, f.strip) for f in recipe.fixes] == [
        (1, ("CVE-2099-1001",), "bounds.patch", 1),
        (2, ("CVE-2099-1003",), "inline.patch", 1),
    ]


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    path = write_recipe(tmp_path, ("bounds",))
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('name = "libvuln"', 'name = "lib vuln"', "name must be a plain name"),
        ('command = "make"', "", "build.command is required"),
        ('command = "make"', "command = 3", "build.command must be a str, not int"),
        ('library = "libvuln.so.1"', 'library = "/lib/x.so"', "must be a path inside"),
        ('cc = "gcc"', 'cc = "gcc"\ncflgs = "-O2"', "compiler.cflgs is not a recipe key"),
        ("build_is_target = true", "", "[target] needs either binary"),
        ("build_is_target = true", 'build_is_target = true\nbinary = "/bin/sh"', "not both"),
        ('cves = ["CVE-2099-1001"]', 'cves = ["2099-1001"]', "not a CVE id"),
        ("bounds.patch", "missing.patch", "which does not exist"),
        ('title = "bounds check in vuln_get"', "", "fix[1].title is required"),
        ("[source]", "[source]\ntarball = 'x.tgz'", "x.tgz, which does not exist"),
        ("[[fix]]", "[fix]", "fix must be a list"),
        ('name = "libvuln"', 'name = "libvuln', "not valid TOML"),
    ],
)
def test_recipe_mistakes_are_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(_broken(tmp_path, old, new))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_recipe_without_fixes(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, ())
    with pytest.raises(RecipeError, match="fix is required"):
        load_recipe(path)
