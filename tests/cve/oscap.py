"""What tests ask of this machine's real scanner: the installed libexpat1, and oscap's verdicts."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from nonstop.cve.model import InstalledPackage

OVAL = "http://oval.mitre.org/XMLSchema/oval-definitions-5"
RESULTS = "http://oval.mitre.org/XMLSchema/oval-results-5"


def installed_expat() -> InstalledPackage:
    """libexpat1 as dpkg has it installed on this machine."""
    fields = "${Version}\t${source:Package}\t${source:Version}\t${Architecture}"
    out = subprocess.run(
        ["dpkg-query", "-W", f"-f={fields}", "libexpat1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    version, source, source_version, arch = out.split("\t")
    return InstalledPackage("libexpat1", version, source, source_version, arch)


def oscap_verdicts(definitions: bytes, work: Path) -> dict[str, str]:
    """oscap's verdict per CVE: 'true' (vulnerable), 'false', or anything else it says; read
    from its results XML, never its text."""
    (work / "defs.xml").write_bytes(definitions)
    run = subprocess.run(
        ["oscap", "oval", "eval", "--results", str(work / "results.xml"), str(work / "defs.xml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    cve_of = {
        d.get("id"): reference.get("ref_id", "")
        for d in ET.fromstring(definitions).iter(f"{{{OVAL}}}definition")
        for reference in d.iter(f"{{{OVAL}}}reference")
    }
    results = ET.parse(work / "results.xml").getroot()
    return {
        cve_of[d.get("definition_id")]: d.get("result", "")
        for d in results.iter(f"{{{RESULTS}}}definition")
    }
