"""`nonstop cve import` and `nonstop cve sync` on a real database, a real HTTP server on
loopback and this machine's Debian archive."""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import text

from nonstop.cve.model import InstalledPackage
from nonstop.cve.package_lists import canonical_rows, packages_digest
from nonstop.server.db import Database
from tests.server.conftest import LiveServer, checkin, create_key, inventory, register
from tests.server.serverproc import nonstop_command

FIXTURES = Path(__file__).parents[1] / "fixtures" / "cve"


def feeds_in(url: str) -> dict[str, int]:
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT feed, COUNT(*) FROM advisories GROUP BY feed")
            ).all()
    finally:
        database.dispose()
    return {feed: count for feed, count in rows}


def cve_command(url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return nonstop_command(
        "cve", *args, "--database-url", url, "--data-dir", str(data_dir), check=False
    )


def test_import_stores_every_file_or_none(
    backend: str, new_database_url: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database_url(backend)
    osv = sorted(str(path) for path in (FIXTURES / "osv").glob("*.json"))
    done = cve_command(url, tmp_path, "import", str(FIXTURES / "tracker.json"), *osv)
    assert done.returncode == 0, done.stderr
    assert "debian-tracker: " in done.stdout and "osv: " in done.stdout
    stored = feeds_in(url)
    assert stored["debian-tracker"] > 0 and stored["osv"] > 0

    # The tracker's JSON is a snapshot: importing it again replaces its records, not adds.
    again = cve_command(url, tmp_path, "import", str(FIXTURES / "tracker.json"))
    assert again.returncode == 0 and feeds_in(url) == stored

    # One malformed file among good ones: nothing at all is imported.
    broken = tmp_path / "broken.json"
    broken.write_text('{"expat": {"CVE-2024-50602": {"releases": {"bookworm": 7}}}}')
    fresh = new_database_url(backend)
    nonstop_command("db", "upgrade", "--database-url", fresh, "--data-dir", str(tmp_path))
    refused = cve_command(fresh, tmp_path, "import", *osv, str(broken))
    assert refused.returncode == 1
    assert refused.stderr.startswith("nonstop: error: nothing imported: ")
    assert "broken.json" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert feeds_in(fresh) == {}


@pytest.fixture
def feed_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static HTTP server on loopback (Last-Modified, 304 on If-Modified-Since)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_sync_imports_a_changed_feed_once_and_keeps_the_others_when_one_fails(
    backend: str,
    new_database_url: Callable[[str], str],
    tmp_path: Path,
    feed_server: tuple[str, Path],
) -> None:
    base, root = feed_server
    shutil.copy(FIXTURES / "tracker.json", root / "tracker.json")
    url = new_database_url(backend)
    feed = f"{base}/tracker.json"
    first = cve_command(url, tmp_path, "sync", "--url", feed)
    assert first.returncode == 0, first.stderr
    assert f"{feed}: debian-tracker: " in first.stdout
    second = cve_command(url, tmp_path, "sync", "--url", feed, "--url", f"{base}/gone.json")
    assert second.returncode == 1
    assert f"{feed}: not modified" in second.stdout
    assert f"{base}/gone.json: error: " in second.stdout and "404" in second.stdout
    assert feeds_in(url)["debian-tracker"] > 0


def test_sync_reads_newer_changelogs_of_the_packages_hosts_run(
    server: LiveServer, tmp_path: Path
) -> None:
    """This machine's libexpat1 is older than the archive's newest: the newest changelog names
    the CVEs fixed since, each fixed at the version whose entry names it."""
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}\t${source:Version}", "libexpat1"],
        capture_output=True, text=True, check=True,
    ).stdout.split("\t")  # fmt: skip
    package = InstalledPackage("libexpat1", installed[0], "expat", installed[1], "amd64")
    rows = canonical_rows([package])
    host = register(server, create_key(server)["key"])
    section = {"manager": "dpkg", "digest": packages_digest("dpkg", rows), "items": rows}
    checkin(server, host, inventory("expat-host", packages=section))

    done = cve_command(server.database_url, tmp_path, "sync", "--changelogs")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "changelog of expat: changelog: " in done.stdout
    database = Database(server.database_url)
    try:
        with database.engine.connect() as connection:
            found = connection.execute(
                text(
                    "SELECT cve, fixed_version FROM advisories"
                    " WHERE feed = 'changelog' AND source = 'expat' AND release = 'debian:12'"
                )
            ).all()
    finally:
        database.dispose()
    fixed: dict[str, str] = {cve: version for cve, version in found}
    # expat 2.5.0-1+deb12u2 fixed CVE-2024-8176 (its changelog says so); nothing at or before
    # the installed version is imported.
    assert fixed.get("CVE-2024-8176") == "2.5.0-1+deb12u2"
    assert "CVE-2024-45490" not in fixed  # fixed in deb12u1, the installed version
