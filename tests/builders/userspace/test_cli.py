"""`nonstop build userspace`: bundles on disk, the report in text and JSON, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nonstop.bundle import TrustedKeys, open_bundle
from nonstop.cli import main
from tests.builders.userspace.conftest import write_recipe


def test_cli_builds_levels_and_reports_json(
    tmp_path: Path, key_dir: Path, trusted: TrustedKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(tmp_path / "recipe", ("bounds", "helper"))
    out = tmp_path / "out"
    argv = ["build", "userspace", str(recipe), "--key", str(key_dir), "-o", str(out)]
    code = main([*argv, "--report", "-", "--report-format", "json"])
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)  # the report alone on stdout
    assert "level 2: wrote" in captured.err
    assert report["ok"] is True and report["reproduction"]["build_is_target"] is True
    first, second = report["levels"]
    assert first["cves"] == ["CVE-2099-1001"]
    assert second["cves"] == ["CVE-2099-1001", "CVE-2099-1002"]
    assert second["functions"]["changed"] == ["vuln_checksum", "vuln_get"]
    assert second["functions"]["added"] == ["clamp_len"]
    assert second["functions"]["line_number_only"] == ["vuln_checked"]
    assert second["object_bytes"] > 0 and second["text_bytes"] > 0
    for level in report["levels"]:
        bundle = open_bundle(Path(level["bundle"]), trusted)
        assert bundle.manifest.level == level["level"]
        assert len(bundle.payload("object")) == level["object_bytes"]


def test_cli_refusal_exits_non_zero_with_text_report(
    tmp_path: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(tmp_path / "recipe", ("struct",))
    report = tmp_path / "report.txt"
    code = main(
        [
            "build",
            "userspace",
            str(recipe),
            "--key",
            str(key_dir / "signing.key"),
            "-o",
            str(tmp_path / "out"),
            "--report",
            str(report),
        ]
    )
    assert code == 1
    assert "level 1: REFUSED: " in capsys.readouterr().out
    text = report.read_text()
    assert "level 1: REFUSED" in text
    assert "REFUSED struct record: layout changed (size 12 -> 20)" in text
    assert "CVEs: CVE-2099-1006" in text


def test_cli_bad_recipe_is_one_line(
    tmp_path: Path, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("name = 'x'\n")
    with pytest.raises(SystemExit) as caught:
        main(["build", "userspace", str(recipe), "--key", str(key_dir), "-o", str(tmp_path / "o")])
    assert caught.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("nonstop build userspace: error: recipe ")
    assert "[source] is required" in err
    assert "\n" not in err
