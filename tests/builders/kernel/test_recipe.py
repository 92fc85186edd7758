"""Kernel recipes and the source checks done before anything is compiled (host only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.builders.errors import RecipeError
from nonstop.builders.kernel.module import ModuleBuildError, check_sources, stamp_source
from nonstop.builders.kernel.recipe import load_recipe
from nonstop.bundle.manifest import Fix, FunctionPatch
from nonstop.cli import main as nonstop_main

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "kernel"

SOURCE = """
static struct klp_func funcs[] = {{ {{ .old_name = "cmdline_proc_show", .new_func = f, }}, {{}} }};
static struct klp_patch patch = {{ .mod = THIS_MODULE, .objs = objs, {replace} }};
"""


def write_recipe(directory: Path, text: str, source: str | None = None) -> Path:
    (directory / "fix.c").write_text(
        source if source is not None else SOURCE.format(replace=".replace = true,")
    )
    path = directory / "recipe.toml"
    path.write_text(text)
    return path


MINIMAL = """
name = "demo"
level = 3
[module]
sources = ["fix.c"]
[[function]]
name = "cmdline_proc_show"
"""


def test_example_recipe_parses() -> None:
    recipe = load_recipe(EXAMPLES / "level2.toml")
    assert recipe.name == "example" and recipe.level == 2
    assert recipe.module_name == "nonstop_example_l2"
    assert recipe.sources == ((EXAMPLES / "level2.c").resolve(),)
    assert recipe.functions == (
        FunctionPatch(target="cmdline_proc_show", object="vmlinux"),
        FunctionPatch(target="loadavg_proc_show", object="vmlinux"),
    )
    assert recipe.fixes[1] == Fix(
        title="Example fix: /proc/loadavg shows the patch level", cves=("CVE-2099-0002",)
    )
    # The example pins one exact build: a release alone names a different build each update.
    assert recipe.release == "6.1.0-57-amd64" and recipe.version == "6.1.192-3"
    check_sources(recipe)  # the example follows the rules it documents


def test_minimal_recipe_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path, MINIMAL))
    assert recipe.functions == (FunctionPatch(target="cmdline_proc_show", object="vmlinux"),)
    assert recipe.fixes == () and recipe.release is None and recipe.effective_version is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("level = 3", "level = 0"), "level must be an integer"),
        (("level = 3", 'level = "3"'), "level must be an integer"),
        (('name = "demo"', 'name = "Demo-1"'), "name must match"),
        (('sources = ["fix.c"]', 'sources = ["../fix.h"]'), "must be a .c file"),
        (('sources = ["fix.c"]', 'sources = ["nonstop_demo_l3.c"]'), "reserved"),
        (('name = "cmdline_proc_show"', 'name = "x; rm"'), "is not a symbol name"),
        (("[[function]]", "colour = 1\n[[function]]"), "unknown key 'colour'"),
        (("[module]", '[[fix]]\ntitle = "t"\ncves = ["CVE-1"]\n[module]'), "CVE-YYYY-NNNN"),
        (("[module]", '[[fix]]\ntitle = "caf\\u00e9"\n[module]'), "printable ASCII"),
    ],
)
def test_bad_recipes_are_refused_with_one_line(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write_recipe(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(RecipeError, match=message) as caught:
        load_recipe(path)
    assert "\n" not in str(caught.value)


def test_recipe_without_functions_or_not_toml(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"at least one \[\[function\]\]"):
        load_recipe(write_recipe(tmp_path, MINIMAL.split("[[function]]")[0]))
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(write_recipe(tmp_path, "name = "))
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.toml")


def test_headers_are_checked_and_kept(tmp_path: Path) -> None:
    (tmp_path / "common.h").write_text("#define X 1\n")
    text = MINIMAL.replace('sources = ["fix.c"]', 'sources = ["fix.c"]\nheaders = ["common.h"]')
    recipe = load_recipe(write_recipe(tmp_path, text))
    assert recipe.headers == ((tmp_path / "common.h").resolve(),)
    bad = MINIMAL.replace('sources = ["fix.c"]', 'sources = ["fix.c"]\nheaders = ["fix.c"]')
    with pytest.raises(RecipeError, match=r"must be a \.h file"):
        load_recipe(write_recipe(tmp_path, bad))
    twice = MINIMAL.replace('sources = ["fix.c"]', 'sources = ["fix.c", "x/fix.c"]')
    with pytest.raises(RecipeError, match="share one file name"):
        load_recipe(write_recipe(tmp_path, twice))


def test_sources_must_replace_cumulatively(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path, MINIMAL, SOURCE.format(replace="")))
    with pytest.raises(ModuleBuildError, match=r"\.replace = true"):
        check_sources(recipe)


def test_sources_must_patch_exactly_the_declared_functions(tmp_path: Path) -> None:
    text = MINIMAL + '[[function]]\nname = "loadavg_proc_show"\n'
    recipe = load_recipe(write_recipe(tmp_path, text))
    with pytest.raises(ModuleBuildError, match=r"only in the recipe \['loadavg_proc_show'\]"):
        check_sources(recipe)


def test_stamps_are_valid_c_strings() -> None:
    text = stamp_source({"nonstop_level": "2", "nonstop_recipe": 'a "quoted" \\ name'})
    assert 'MODULE_INFO(nonstop_level, "2");' in text
    assert r'MODULE_INFO(nonstop_recipe, "a \"quoted\" \\ name");' in text


def test_build_command_reports_a_bad_recipe_in_one_line(
    tmp_path: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_recipe(tmp_path, MINIMAL.replace("level = 3", "level = -1"))
    with pytest.raises(SystemExit) as exited:
        nonstop_main(["build", "kernel", str(path), "--key", str(key_dir), "-o", str(tmp_path)])
    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("nonstop build kernel: error:") and "level must be" in error
    assert error.count("\n") == 1
    assert not list(tmp_path.glob("*.nsb"))
