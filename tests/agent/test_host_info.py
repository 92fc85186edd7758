"""Distribution detection from real os-release files of the supported distributions."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonstop.agent.host_info import detect_distro

FIXTURES = Path(__file__).parents[1] / "fixtures" / "os-release"


@pytest.mark.parametrize(
    ("fixture", "os_id", "version", "family", "manager"),
    [
        ("debian-12", "debian", "12", "debian", "dpkg"),
        ("ubuntu-22.04", "ubuntu", "22.04", "debian", "dpkg"),
        ("rhel-9.4", "rhel", "9.4", "rhel", "rpm"),
        ("almalinux-9.4", "almalinux", "9.4", "rhel", "rpm"),
        ("rocky-8.10", "rocky", "8.10", "rhel", "rpm"),
        ("sles-15-sp5", "sles", "15.5", "suse", "rpm"),
        ("opensuse-leap-15.6", "opensuse-leap", "15.6", "suse", "rpm"),
        ("amzn-2023", "amzn", "2023", "rhel", "rpm"),
        ("amzn-2", "amzn", "2", "rhel", "rpm"),
    ],
)
def test_distributions_are_detected(fixture, os_id, version, family, manager):
    distro = detect_distro((FIXTURES / fixture,))
    assert (distro.id, distro.version_id, distro.family, distro.package_manager) == (
        os_id,
        version,
        family,
        manager,
    )
    assert distro.label == f"{os_id} {version}"


def test_falls_back_to_usr_lib_os_release(tmp_path):
    distro = detect_distro((tmp_path / "missing", FIXTURES / "rocky-8.10"))
    assert distro.id == "rocky"


def test_unknown_distribution_is_other(tmp_path):
    path = tmp_path / "os-release"
    path.write_text("ID=exotic\nID_LIKE=nothing\nVERSION_ID=1\n")
    distro = detect_distro((path,))
    assert (distro.family, distro.package_manager) == ("other", None)
    assert detect_distro((tmp_path / "absent",)).id == "linux"


def test_this_machine():
    assert detect_distro().family == "debian"
