"""The worked example of docs/recipes.md builds as the documentation says."""

from __future__ import annotations

from pathlib import Path

from nonstop.builders.userspace.builder import build_userspace
from nonstop.builders.userspace.recipe import load_recipe
from nonstop.bundle import SigningKey, TrustedKeys, open_bundle

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "libgreet" / "recipe.toml"


def test_libgreet_example_builds_two_levels(
    tmp_path: Path, signing_key: SigningKey, trusted: TrustedKeys
) -> None:
    result = build_userspace(load_recipe(EXAMPLE), signing_key, tmp_path)
    assert [level.status for level in result.levels] == ["built", "built"]
    second = open_bundle(tmp_path / "libgreet-level2.nsb", trusted).manifest
    assert {f.target for f in second.functions} == {"greet", "greet_language"}
    assert second.effective_version == "1.0+nonstop2"
    assert second.cves == ["CVE-2099-0101", "CVE-2099-0102"]
    patch = result.levels[1].patch
    assert patch is not None and sorted(patch.links) == ["languages"]
