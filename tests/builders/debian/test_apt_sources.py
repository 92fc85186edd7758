"""deb-src entries are added for the Debian archive's deb entries only, once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nonstop.builders.debian.apt import enable_deb_src

DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Enabled: no
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    return tmp_path


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="adding deb-src entries needs root")


@needs_root
def test_deb822_stanzas_get_deb_src_twins_once(config: Path) -> None:
    (config / "sources.list.d" / "debian.sources").write_text(DEBIAN_SOURCES)
    (config / "sources.list.d" / "vendor.sources").write_text(
        "Types: deb\nURIs: https://vendor.example/apt\nSuites: stable\nComponents: main\n"
    )
    assert enable_deb_src(config, update=False)
    written = (config / "sources.list.d" / "nonstop-deb-src.sources").read_text()
    stanzas = written.strip().split("\n\n")
    assert len(stanzas) == 2  # the disabled stanza and the third-party repository are left alone
    assert all(s.startswith("Types: deb-src\n") for s in stanzas)
    assert "URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates" in stanzas[0]
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in stanzas[1]
    assert "vendor.example" not in written
    assert not enable_deb_src(config, update=False)  # idempotent
    assert (config / "sources.list.d" / "nonstop-deb-src.sources").read_text() == written


@needs_root
def test_existing_deb_src_entries_are_not_duplicated(config: Path) -> None:
    (config / "sources.list.d" / "debian.sources").write_text(
        DEBIAN_SOURCES.replace("Types: deb\n", "Types: deb deb-src\n", 2)
    )
    assert not enable_deb_src(config, update=False)
    assert not (config / "sources.list.d" / "nonstop-deb-src.sources").exists()


@needs_root
def test_one_line_sources_list_gets_deb_src_lines(config: Path) -> None:
    (config / "sources.list").write_text(
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://deb.debian.org/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main # security\n"
        "deb-src http://security.debian.org/debian-security bookworm-security main\n"
        "# deb http://deb.debian.org/debian bookworm-updates main\n"
    )
    assert enable_deb_src(config, update=False)
    assert (config / "sources.list.d" / "nonstop-deb-src.list").read_text() == (
        "deb-src [signed-by=/usr/share/keyrings/k.gpg] http://deb.debian.org/debian bookworm main\n"
    )
    assert not enable_deb_src(config, update=False)


@needs_root
def test_without_root_a_missing_entry_is_one_line_and_nothing_is_written() -> None:
    # A directory user nobody can read: pytest's own tmp_path is private to root.
    config = Path(tempfile.mkdtemp(prefix="nonstop-apt-"))
    config.chmod(0o755)
    (config / "sources.list.d").mkdir(mode=0o755)
    (config / "sources.list.d" / "debian.sources").write_text(DEBIAN_SOURCES)
    code = (
        "import sys; from pathlib import Path; from nonstop.builders.errors import BuilderError\n"
        "from nonstop.builders.debian.apt import enable_deb_src\n"
        "try: enable_deb_src(Path(sys.argv[1]), update=False)\n"
        "except BuilderError as exc: print(exc); sys.exit(3)\n"
    )
    done = subprocess.run(
        [*NOBODY, sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        assert done.returncode == 3, done.stderr
        assert done.stdout.startswith("apt has no deb-src entries for the Debian archive")
        assert done.stdout.count("\n") == 1
        assert not (config / "sources.list.d" / "nonstop-deb-src.sources").exists()
    finally:
        shutil.rmtree(config)
