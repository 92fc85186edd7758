""".dsc files checked against the OpenPGP keys of Debian's uploaders before anything trusts them.

A source package apt fetches is vouched for by the archive's signed index. One
taken from the pool without the index (``pool``) is vouched for only by the
signature its uploader put on the ``.dsc``: ``gpgv`` checks it against
``debian-keyring.gpg`` (Debian developers) and then ``debian-maintainers.gpg``
(Debian maintainers), the keyrings of the people who may upload, as the
``debian-keyring`` package installs them. ``debian-nonupload.gpg`` is not
used: its members may not upload, so their signature does not stand for an
upload. A ``.dsc`` that is not one clearsigned block (text outside the signed
part would be read by tools but vouched for by nobody), unsigned, badly
signed, or signed by a key in none of the keyrings is refused; the signed
text, as gpgv verified it, is what the caller reads.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from nonstop.builders.errors import BuilderError

KEYRING_DIR = Path("/usr/share/keyrings")
KEYRINGS = ("debian-keyring.gpg", "debian-maintainers.gpg")
_BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
_END = b"-----END PGP SIGNATURE-----"
_STATUS = "[GNUPG:] "


@dataclass(frozen=True)
class Signer:
    """Who signed a ``.dsc`` and when, the keyring holding the key, and its expiry if passed."""

    fingerprint: str
    user_id: str
    keyring: str
    signed: int
    """When the signature was made (seconds since the epoch, as the signature says)."""
    expired: int | None = None
    """When the key expired, if it has (the earliest expiry gpgv reports for it)."""

    @property
    def expired_before_signing(self) -> bool:
        return self.expired is not None and self.expired < self.signed

    def describe(self) -> str:
        text = f"{self.user_id} (key {self.fingerprint}, {self.keyring}) on {_day(self.signed)}"
        if self.expired is not None:
            text += f"; the key expired on {_day(self.expired)}"
        return text


def verify_dsc(
    dsc: Path, keyring_dir: Path = KEYRING_DIR, trust_expired: frozenset[str] = frozenset()
) -> tuple[Signer, str]:
    """The signer of DSC and the text it signed; a one-line BuilderError if it is not trusted.

    A signature made while its key was valid is good even once the key has
    expired. One made after the key's expiry, as the keyring records it, is
    refused unless the key's fingerprint is in TRUST_EXPIRED (an operator's
    decision for that one key, which the caller reports).
    """
    data = dsc.read_bytes()
    stripped = data.strip()
    if not stripped.startswith(_BEGIN):
        raise BuilderError(f"{dsc.name} is not signed (no OpenPGP clearsigned block): refused")
    if stripped.count(_BEGIN) != 1 or not stripped.endswith(_END) or stripped.count(_END) != 1:
        raise BuilderError(f"{dsc.name} holds text outside its one signed block: refused")
    keyrings = [keyring_dir / name for name in KEYRINGS if (keyring_dir / name).is_file()]
    if not keyrings:
        raise BuilderError(
            f"cannot verify {dsc.name}: Debian's keyrings are not installed in {keyring_dir} "
            "(apt-get install debian-keyring)"
        )
    key = "unknown"
    for keyring in keyrings:
        status, text = _gpgv(dsc, keyring)
        for word in ("BADSIG", "REVKEYSIG"):
            if word in status[0]:
                raise BuilderError(
                    f"{dsc.name}: its signature does not verify ({word} {status[0][word]}, "
                    f"{keyring.name}): refused"
                )
        good = status[0].get("GOODSIG") or status[0].get("EXPKEYSIG")
        if good is not None and "VALIDSIG" in status[0]:
            fields = status[0]["VALIDSIG"].split()
            expired = min(status[1]) if "EXPKEYSIG" in status[0] and status[1] else None
            signer = Signer(
                fields[-1], good.split(" ", 1)[-1], keyring.name, int(fields[2]), expired
            )
            if signer.expired_before_signing and signer.fingerprint not in trust_expired:
                raise BuilderError(
                    f"{dsc.name} was signed by {signer.describe()}, before the signature: "
                    f"refused (--trust-expired-key {signer.fingerprint} accepts this key)"
                )
            return signer, text
        key = status[0].get("NO_PUBKEY", status[0].get("ERRSIG", key)).split()[0]
    raise BuilderError(
        f"{dsc.name} is signed by key {key}, which is in none of Debian's keyrings "
        f"({', '.join(k.name for k in keyrings)}): refused"
    )


def _day(seconds: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def _gpgv(dsc: Path, keyring: Path) -> tuple[tuple[dict[str, str], list[int]], str]:
    """gpgv's status (keyword -> rest of its first line, and every KEYEXPIRED time) and the
    signed text, checking DSC against KEYRING."""
    argv = ["gpgv", "--status-fd", "2", "--keyring", str(keyring), "--output", "-", str(dsc)]
    try:
        done = subprocess.run(argv, capture_output=True, check=False)
    except OSError as exc:
        raise BuilderError(f"cannot run gpgv: {exc.strerror} (apt-get install gpgv)") from None
    status: dict[str, str] = {}
    expiries = []
    for line in done.stderr.decode(errors="replace").splitlines():
        if line.startswith(_STATUS):
            keyword, _, rest = line[len(_STATUS) :].partition(" ")
            status.setdefault(keyword, rest)
            if keyword == "KEYEXPIRED" and rest.strip().isdigit():
                expiries.append(int(rest))
    if done.returncode != 0:  # a signature is good only when gpgv's status says so too
        status.pop("GOODSIG", None)
        status.pop("EXPKEYSIG", None)
    return (status, expiries), done.stdout.decode(errors="replace")
