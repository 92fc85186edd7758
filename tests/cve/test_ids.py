"""CVE ids: the strict form, and the ids free text names (the Debian builder reads these too)."""

from __future__ import annotations

import pytest

from nonstop.cve.ids import cve_ids, is_cve_id


def test_cve_ids_reads_the_shorthand_of_changelogs() -> None:
    assert cve_ids("Fix CVE-2025-49794 and -49796; CVE-2024-1234, -5678 & -9012") == [
        "CVE-2025-49794",
        "CVE-2025-49796",
        "CVE-2024-1234",
        "CVE-2024-5678",
        "CVE-2024-9012",
    ]
    assert cve_ids("d/p/CVE-2025-7425.patch, CVE-2025-7425") == ["CVE-2025-7425"]
    assert cve_ids("CVE-25-1234 and CVE-2025-123") == []


@pytest.mark.parametrize("text", ["CVE-2024-50602", "CVE-2021-1234", "CVE-2024-1234567"])
def test_is_cve_id_accepts_ids(text: str) -> None:
    assert is_cve_id(text)


@pytest.mark.parametrize(
    "text",
    [
        "TEMP-0000000-2A1C4F",
        "CVE-2024-123",
        "CVE-24-1234",
        " CVE-2024-50602",
        "CVE-2024-50602\n",
        "cve-2024-50602",
        "CVE-2024-50602 and -50603",
        "CVE-2024-" + "1" * 30,
        "DEBIAN-CVE-2024-50602",
    ],
)
def test_is_cve_id_refuses_anything_else(text: str) -> None:
    assert not is_cve_id(text)
