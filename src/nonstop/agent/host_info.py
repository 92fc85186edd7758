"""What this host is: its distribution and family, for check-in and package lookups.

Matching patches to hosts is by build-id, so any distribution works once
patches exist for its binaries; the distribution is reported so the fleet
view and CVE matching can speak in the distribution's own terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nonstop.bundle.identity import read_os_release

OS_RELEASE_PATHS = (Path("/etc/os-release"), Path("/usr/lib/os-release"))

# Distribution ids whose family the ID_LIKE field does not name reliably.
_FAMILY_OF_ID = {
    "debian": "debian",
    "ubuntu": "debian",
    "rhel": "rhel",
    "centos": "rhel",
    "almalinux": "rhel",
    "rocky": "rhel",
    "ol": "rhel",
    "amzn": "rhel",
    "fedora": "fedora",
    "sles": "suse",
    "sled": "suse",
}
_PACKAGE_MANAGER = {"debian": "dpkg", "rhel": "rpm", "fedora": "rpm", "suse": "rpm"}


@dataclass(frozen=True)
class Distro:
    """This host's distribution as its os-release names it (absent fields: "" or Linux defaults)."""

    id: str
    version_id: str
    name: str
    pretty_name: str
    family: str
    """debian, rhel, fedora, suse or other."""
    package_manager: str | None
    """dpkg or rpm: which database knows who owns a library file."""

    @property
    def label(self) -> str:
        return f"{self.id} {self.version_id}".strip()


def family_of(os_id: str, id_like: str) -> str:
    """The family of distribution OS_ID, else of its ID_LIKE words; "other" if none is known."""
    if os_id in _FAMILY_OF_ID:
        return _FAMILY_OF_ID[os_id]
    if os_id.startswith("opensuse"):
        return "suse"
    for like in id_like.split():
        if like in ("suse", "opensuse"):
            return "suse"
        if like in _FAMILY_OF_ID:
            return _FAMILY_OF_ID[like]
    return "other"


def detect_distro(paths: tuple[Path, ...] = OS_RELEASE_PATHS) -> Distro:
    """The distribution described by the first readable os-release file."""
    values: dict[str, str] = {}
    for path in paths:
        values = read_os_release(path)
        if values:
            break
    os_id = values.get("ID", "linux").lower()
    family = family_of(os_id, values.get("ID_LIKE", "").lower())
    return Distro(
        id=os_id,
        version_id=values.get("VERSION_ID", ""),
        name=values.get("NAME", "Linux"),
        pretty_name=values.get("PRETTY_NAME", values.get("NAME", "Linux")),
        family=family,
        package_manager=_PACKAGE_MANAGER.get(family),
    )
