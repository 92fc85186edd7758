"""Source versions from the archive's pool: where they are looked for, and whose signature counts.

The keys are the tests' own (gpg in a private home, fixed fake times): one
exported as ``debian-keyring.gpg`` in a private keyring dir, one that is in no
keyring, and one that expired a day before it signed. The pool is a local
HTTP server.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from nonstop.builders.debian.pool import PoolOrigin, fetch_from_pool, pool_directories
from nonstop.builders.debian.signatures import verify_dsc
from nonstop.builders.errors import BuilderError

pytestmark = pytest.mark.skipif(
    not (shutil.which("gpg") and shutil.which("gpgv")),
    reason="gpg and gpgv needed (scripts/install-system-deps.sh)",
)

TEXT = "Source: demo\nVersion: 1.0-1\n"
CREATED = 1_700_000_000
SIGNED = CREATED + 200_000
DSC = """Format: 3.0 (quilt)
Source: demo
Version: 1.0-1
Checksums-Sha256:
 {sha256} {size} demo_1.0-1.tar.xz
"""


@dataclass
class Uploaders:
    """Three keys in one gpg home: TRUSTED and EXPIRED are in KEYRINGS, STRANGER is not."""

    home: Path
    keyrings: Path
    trusted: str
    stranger: str
    expired: str
    expired_signature: str = ""
    """TEXT signed by EXPIRED at SIGNED, after the expiry its keyring copy records."""

    def gpg(self, *argv: str, at: int = SIGNED) -> None:
        subprocess.run(
            ["gpg", "--batch", "--quiet", "--faked-system-time", f"{at}!", *argv],
            env={**os.environ, "GNUPGHOME": str(self.home)},
            check=True,
            capture_output=True,
        )

    def sign(self, text: str, key: str, into: Path, at: int = SIGNED) -> Path:
        plain = into.with_suffix(".txt")
        plain.write_text(text)
        into.unlink(missing_ok=True)
        self.gpg("--clearsign", "-u", key, "-o", str(into), str(plain), at=at)
        plain.unlink()
        return into


def _new_key(home: Path, name: str) -> str:
    subprocess.run(
        ["gpg", "--batch", "--quiet", "--faked-system-time", f"{CREATED}!", "--passphrase", "",
         "--quick-gen-key", f"{name} <{name.lower()}@example.org>", "ed25519", "sign", "never"],
        env={**os.environ, "GNUPGHOME": str(home)}, check=True, capture_output=True,
    )  # fmt: skip
    listing = subprocess.run(
        ["gpg", "--with-colons", "--list-keys", name],
        env={**os.environ, "GNUPGHOME": str(home)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))


@pytest.fixture(scope="session")
def uploaders(tmp_path_factory: pytest.TempPathFactory) -> Uploaders:
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    keys = Uploaders(
        home,
        tmp_path_factory.mktemp("keyrings"),
        _new_key(home, "Trusted"),
        _new_key(home, "Stranger"),
        _new_key(home, "Expired"),
    )
    # Expired: it signs at SIGNED, then is given an expiry (made earlier) a day after CREATED.
    keys.expired_signature = keys.sign(TEXT, keys.expired, home / "expired.dsc").read_text()
    keys.gpg("--quick-set-expire", keys.expired, "1d", at=CREATED + 3600)
    exported = subprocess.run(
        ["gpg", "--export", keys.trusted, keys.expired],
        env={**os.environ, "GNUPGHOME": str(home)},
        check=True,
        capture_output=True,
    ).stdout
    (keys.keyrings / "debian-keyring.gpg").write_bytes(exported)
    return keys


def test_pool_directories_follow_the_archives_apt_reads(tmp_path: Path) -> None:
    listd = tmp_path / "sources.list.d"
    listd.mkdir()
    (listd / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\n\n"
        "Types: deb deb-src\nURIs: http://deb.debian.org/debian-security/\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://example.org/off\nSuites: bookworm\nComponents: main\n"
        "Enabled: no\n"
    )
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://mirror.example/debian bookworm main # a mirror\n"
    )
    assert pool_directories("libxml2", tmp_path) == [
        "http://deb.debian.org/debian/pool/main/libx/libxml2",
        "http://deb.debian.org/debian/pool/contrib/libx/libxml2",
        "http://deb.debian.org/debian-security/pool/updates/main/libx/libxml2",
        "http://mirror.example/debian/pool/main/libx/libxml2",
    ]
    assert (
        pool_directories("expat", tmp_path)[0] == "http://deb.debian.org/debian/pool/main/e/expat"
    )


def test_a_dsc_signed_by_a_keyring_key_is_trusted_and_its_signed_text_is_what_is_read(
    uploaders: Uploaders, tmp_path: Path
) -> None:
    dsc = uploaders.sign(TEXT, uploaders.trusted, tmp_path / "d.dsc")
    signer, text = verify_dsc(dsc, uploaders.keyrings)
    assert (signer.fingerprint, signer.keyring, signer.signed) == (
        uploaders.trusted,
        "debian-keyring.gpg",
        SIGNED,
    )
    assert signer.user_id == "Trusted <trusted@example.org>" and signer.expired is None
    assert text == TEXT

    # A key that expired after it signed: the signature was made while it was valid.
    early = uploaders.sign("Source: demo\n", uploaders.expired, tmp_path / "e.dsc", CREATED + 1800)
    signer, _ = verify_dsc(early, uploaders.keyrings)
    assert signer.expired is not None and not signer.expired_before_signing


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("unsigned", "d.dsc is not signed (no OpenPGP clearsigned block): refused"),
        ("appended", "d.dsc holds text outside its one signed block: refused"),
        ("stranger", "d.dsc is signed by key {stranger16}, which is in none of Debian's keyrings"),
        ("tampered", "d.dsc: its signature does not verify (BADSIG"),
        ("expired", "d.dsc was signed by Expired <expired@example.org> (key {expired}, "
                    "debian-keyring.gpg) on 2023-11-17; the key expired on 2023-11-15, before "
                    "the signature: refused (--trust-expired-key {expired} accepts this key)"),
    ],
)  # fmt: skip
def test_a_dsc_not_signed_by_a_valid_keyring_key_is_refused_in_one_line(
    uploaders: Uploaders, tmp_path: Path, case: str, error: str
) -> None:
    dsc = tmp_path / "d.dsc"
    if case == "unsigned":
        dsc.write_text(TEXT)
    elif case == "expired":
        dsc.write_text(uploaders.expired_signature)
    else:
        uploaders.sign(TEXT, uploaders.stranger if case == "stranger" else uploaders.trusted, dsc)
    if case == "appended":
        dsc.write_text(dsc.read_text() + "Files:\n 00 1 evil.tar.xz\n")
    if case == "tampered":
        dsc.write_text(dsc.read_text().replace("1.0-1", "1.0-2"))
    with pytest.raises(BuilderError) as refused:
        verify_dsc(dsc, uploaders.keyrings)
    wanted = error.format(stranger16=uploaders.stranger[-16:], expired=uploaders.expired)
    assert str(refused.value).startswith(wanted)
    if case == "expired":  # the operator's decision for exactly this key
        signer, _ = verify_dsc(dsc, uploaders.keyrings, frozenset({uploaders.expired}))
        assert signer.expired_before_signing


def test_no_keyrings_installed_is_one_line(uploaders: Uploaders, tmp_path: Path) -> None:
    dsc = uploaders.sign("Source: demo\n", uploaders.trusted, tmp_path / "d.dsc")
    with pytest.raises(BuilderError, match=r"Debian's keyrings are not installed in .*"
                       r"\(apt-get install debian-keyring\)"):  # fmt: skip
        verify_dsc(dsc, tmp_path / "none")


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A local archive (its main pool dir on disk) and an apt config naming it and its
    security archive (pool/updates/, empty unless a test fills it)."""
    root = tmp_path / "archive"
    directory = root / "debian" / "pool" / "main" / "d" / "demo"
    directory.mkdir(parents=True)
    handler = partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "apt"
    (config / "sources.list.d").mkdir(parents=True)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    (config / "sources.list").write_text(
        f"deb {base}/debian bookworm main\ndeb {base}/debian-security bookworm-security main\n"
    )
    yield directory, config
    server.shutdown()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def publish(uploaders: Uploaders, directory: Path, tarball: bytes) -> None:
    (directory / "demo_1.0-1.tar.xz").write_bytes(tarball)
    text = DSC.format(sha256=hashlib.sha256(tarball).hexdigest(), size=len(tarball))
    uploaders.sign(text, uploaders.trusted, directory / "demo_1.0-1.dsc")


def fetch(uploaders: Uploaders, config: Path, work: Path) -> tuple[PoolOrigin | None, list[str]]:
    said: list[str] = []
    work.mkdir(exist_ok=True)
    origin = fetch_from_pool(
        "demo", "1.0-1", work, said.append, config=config, keyring_dir=uploaders.keyrings
    )
    return origin, said


def test_a_signed_pool_dsc_and_the_files_it_lists_are_fetched(
    uploaders: Uploaders, pool: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, config = pool
    publish(uploaders, directory, b"upstream and debian")
    origin, said = fetch(uploaders, config, tmp_path / "work")
    assert origin is not None
    assert origin.url.endswith("/debian/pool/main/d/demo/demo_1.0-1.dsc")
    assert origin.signer.fingerprint == uploaders.trusted and not origin.trusted_expired_key
    assert (tmp_path / "work" / "demo_1.0-1.tar.xz").read_bytes() == b"upstream and debian"
    assert said[-1] == "demo 1.0-1: downloading demo_1.0-1.tar.xz (19 bytes) from the pool"


def test_a_file_the_dscs_own_pool_lacks_is_taken_from_another_archives_pool(
    uploaders: Uploaders, pool: tuple[Path, Path], tmp_path: Path
) -> None:
    """curl 7.88.1-10+deb12u5: the security pool has the .dsc, the main pool its tarballs."""
    directory, config = pool
    security = directory.parents[4] / "debian-security/pool/updates/main/d/demo"
    security.mkdir(parents=True)
    publish(uploaders, directory, b"upstream and debian")
    (directory / "demo_1.0-1.dsc").rename(security / "demo_1.0-1.dsc")
    origin, _ = fetch(uploaders, config, tmp_path / "work")
    assert origin is not None
    assert origin.url.endswith("/debian-security/pool/updates/main/d/demo/demo_1.0-1.dsc")
    assert (tmp_path / "work" / "demo_1.0-1.tar.xz").read_bytes() == b"upstream and debian"


def test_a_pool_without_the_version_gives_none(
    uploaders: Uploaders, pool: tuple[Path, Path], tmp_path: Path
) -> None:
    _, config = pool
    origin, said = fetch(uploaders, config, tmp_path / "work")
    assert origin is None and said == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("tarball", "demo_1.0-1.tar.xz from the pool does not match its SHA-256 in demo_1.0-1.dsc"),
        ("Source", "demo_1.0-1.dsc is signed but describes other"),
        ("name", "demo_1.0-1.dsc lists a file named '../demo_1.0-1.tar.xz': refused"),
    ],
)
def test_a_pool_dsc_whose_fields_or_files_do_not_match_is_refused(
    uploaders: Uploaders, pool: tuple[Path, Path], tmp_path: Path, change: str, error: str
) -> None:
    directory, config = pool
    publish(uploaders, directory, b"upstream and debian")
    dsc = directory / "demo_1.0-1.dsc"
    if change == "tarball":
        (directory / "demo_1.0-1.tar.xz").write_bytes(b"something else")
    else:
        text = DSC.format(sha256="0" * 64, size=1)
        text = (
            text.replace("Source: demo", "Source: other")
            if change == "Source"
            else text.replace(" demo_1.0-1.tar.xz", " ../demo_1.0-1.tar.xz")
        )
        uploaders.sign(text, uploaders.trusted, dsc)
    with pytest.raises(BuilderError) as refused:
        fetch(uploaders, config, tmp_path / "work")
    assert str(refused.value).startswith(error)
