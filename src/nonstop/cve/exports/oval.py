"""OVAL 5.11 definitions that tell, on the host itself, which CVEs its running code has.

One ``vulnerability`` definition per finding (not-affected ones left out),
true when the host is vulnerable:

- the flawed code is there: a library's binary package is installed at a
  version older than the fixed one (``dpkginfo_test``, ``debian_evr_string``
  ``less than``; any version when no fix exists), or the running kernel was
  built from an older source version (the ``Debian <version>`` of
  ``/proc/version``, which names the running build and not an installed
  image);
- AND NOT the live patch closing the CVE is applied: the agent's level file
  (``LEVEL_STATE_DIR/level_state_name(...)``) holds a level greater than or
  equal to the closing one, and for the kernel its livepatch module is
  enabled in sysfs when the module is known.

A published live patch that is not applied yet is tested too: once the agent
applies it, the same definitions say not vulnerable without a new export.
Every id derives from what it tests, so shared tests appear once.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime

from nonstop.cve.exports.subjects import (
    ExportError,
    Subject,
    inert,
    live_patch_text,
    stable_id,
    timestamp,
)
from nonstop.cve.model import Status, level_state_name
from nonstop.cve.versions import uses_rpm

LIVEPATCH_SYSFS = "/sys/kernel/livepatch"
PROC_VERSION = "/proc/version"
RUNNING_DEBIAN_KERNEL = r"\sDebian (\S+) \("
"""The source version in /proc/version (``... #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (...)``)."""
LEVEL_LINE = r"^level=([0-9]+)$"
ID_NAMESPACE = "nonstop"

DEF = "http://oval.mitre.org/XMLSchema/oval-definitions-5"
COMMON = "http://oval.mitre.org/XMLSchema/oval-common-5"
IND = DEF + "#independent"
LINUX = DEF + "#linux"
_PREFIXES = {"": DEF, "oval": COMMON, "ind-def": IND, "linux-def": LINUX}
for _prefix, _uri in _PREFIXES.items():
    ET.register_namespace(_prefix, _uri)

_MODULE_NAME = re.compile(r"[A-Za-z0-9_-]{1,56}")


def _el(
    parent: ET.Element | None, ns: str, tag: str, text: str | None = None, **attrs: str
) -> ET.Element:
    element = (
        ET.Element(f"{{{ns}}}{tag}", attrs)
        if parent is None
        else ET.SubElement(parent, f"{{{ns}}}{tag}", attrs)
    )
    element.text = text
    return element


def _evr(version: str) -> str:
    """VERSION as OVAL's debian_evr_string wants it: with its epoch, ``0:`` when none."""
    return version if ":" in version else f"0:{version}"


def oval_id(kind: str, *content: object) -> str:
    """The OVAL id (``oval:nonstop:tst:N``) of the KIND item made of CONTENT."""
    return f"oval:{ID_NAMESPACE}:{kind}:{1 + int(stable_id(kind, *content)[:15], 16)}"


Test = tuple[str, str]
"""A test's id and what it checks, in words."""


class _Content:
    """Tests, objects and states, keyed by ids made from their content."""

    def __init__(self) -> None:
        self.tests: dict[str, ET.Element] = {}
        self.objects: dict[str, ET.Element] = {}
        self.states: dict[str, ET.Element] = {}

    def _test(
        self, ns: str, family: str, comment: str, obj: ET.Element, state: ET.Element | None
    ) -> Test:
        """A test of OBJECT against STATE (or of its existence), added once."""
        obj_id, state_id = obj.get("id", ""), state.get("id", "") if state is not None else ""
        test_id = oval_id("tst", obj_id, state_id)
        self.objects.setdefault(obj_id, obj)
        if state is not None:
            self.states.setdefault(state_id, state)
        test = _el(
            None,
            ns,
            f"{family}_test",
            id=test_id,
            version="1",
            check="all",
            check_existence="at_least_one_exists",
            comment=comment,
        )
        _el(test, ns, "object", object_ref=obj_id)
        if state is not None:
            _el(test, ns, "state", state_ref=state_id)
        self.tests.setdefault(test_id, test)
        return test_id, comment

    def package_older(self, name: str, fixed: str | None) -> Test:
        """Test: binary package NAME installed at a version older than FIXED (any when None)."""
        obj = _el(None, LINUX, "dpkginfo_object", id=oval_id("obj", "dpkg", name), version="1")
        _el(obj, LINUX, "name", inert(name))
        state = None
        if fixed is not None:
            state = _el(
                None, LINUX, "dpkginfo_state", id=oval_id("ste", "dpkg", fixed), version="1"
            )
            _el(
                state,
                LINUX,
                "evr",
                _evr(inert(fixed)),
                datatype="debian_evr_string",
                operation="less than",
            )
        what = f"older than {inert(fixed)}" if fixed else "at any version"
        return self._test(LINUX, "dpkginfo", f"{inert(name)} is installed {what}", obj, state)

    def file_value(
        self, path: str, pattern: str, datatype: str, operation: str, value: str, comment: str
    ) -> Test:
        """Test: the first group of PATTERN in the file PATH compares to VALUE as OPERATION
        (or, with an empty VALUE, only that the file has a matching line)."""
        obj = _el(
            None, IND, "textfilecontent54_object", id=oval_id("obj", path, pattern), version="1"
        )
        _el(obj, IND, "filepath", path)
        _el(obj, IND, "pattern", pattern, operation="pattern match")
        _el(obj, IND, "instance", "1", datatype="int", operation="greater than or equal")
        state = None
        if value:
            state_id = oval_id("ste", datatype, operation, value)
            state = _el(None, IND, "textfilecontent54_state", id=state_id, version="1")
            _el(state, IND, "subexpression", value, datatype=datatype, operation=operation)
        return self._test(IND, "textfilecontent54", comment, obj, state)


def _criterion(parent: ET.Element, test: Test) -> None:
    _el(parent, DEF, "criterion", test_ref=test[0], comment=test[1])


def _flawed_code(s: Subject, content: _Content, criteria: ET.Element) -> None:
    """Criteria true when the host has the flawed code installed (kernel: running)."""
    fixed = s.finding.fixed_version
    if s.kernel:
        comment = (
            f"the running kernel is older than {inert(fixed)}" if fixed else "a Debian kernel runs"
        )
        test = content.file_value(
            PROC_VERSION,
            RUNNING_DEBIAN_KERNEL,
            "debian_evr_string",
            "less than",
            _evr(inert(fixed)) if fixed else "",
            comment,
        )
        _criterion(criteria, test)
        return
    installed = _el(criteria, DEF, "criteria", operator="OR")
    for package in s.packages:
        _criterion(installed, content.package_older(package.name, fixed))


def _live_patch(
    s: Subject, content: _Content, criteria: ET.Element, paths: tuple[str, str]
) -> None:
    """Negated criteria: the level that closes the CVE is applied (kernel: and enabled)."""
    level = s.level
    if level is None:
        return
    level_dir, livepatch_dir = paths
    applied = _el(criteria, DEF, "criteria", operator="AND", negate="true")
    name = level_state_name(None if s.kernel else s.patched_build_id)
    if not s.kernel and s.patched_build_id is None:
        raise ExportError(
            f"{s.finding.cve}: live patch target {inert(level.target_key, 80)!r} "
            "is neither the running kernel nor a library build-id"
        )
    comment = f"{live_patch_text(level)} or a later level is applied"
    test = content.file_value(
        posixpath.join(level_dir, name),
        LEVEL_LINE,
        "int",
        "greater than or equal",
        str(level.level),
        comment,
    )
    _criterion(applied, test)
    if s.kernel and level.kernel_module:
        if not _MODULE_NAME.fullmatch(level.kernel_module):
            raise ExportError(f"not a livepatch module name: {inert(level.kernel_module, 80)!r}")
        comment = f"livepatch module {level.kernel_module} is enabled"
        path = posixpath.join(livepatch_dir, level.kernel_module, "enabled")
        test = content.file_value(path, r"^([01])$", "int", "equals", "1", comment)
        _criterion(applied, test)


def _definition(s: Subject, content: _Content, paths: tuple[str, str]) -> ET.Element:
    f = s.finding
    definition = _el(
        None, DEF, "definition", id=oval_id("def", s.key), version="1", **{"class": "vulnerability"}
    )
    metadata = _el(definition, DEF, "metadata")
    _el(metadata, DEF, "title", f"{inert(f.cve, 40)} in {inert(f.source)} on {s.hostname}")
    _el(
        metadata,
        DEF,
        "reference",
        source="CVE",
        ref_id=inert(f.cve, 40),
        ref_url=f"https://nvd.nist.gov/vuln/detail/{inert(f.cve, 40)}",
    )
    _el(metadata, DEF, "description", s.details())
    criteria = _el(definition, DEF, "criteria", operator="AND")
    _flawed_code(s, content, criteria)
    _live_patch(s, content, criteria, paths)
    return definition


def definitions(
    subjects: Sequence[Subject], *, generated_at: datetime, level_dir: str, livepatch_dir: str
) -> bytes:
    """The OVAL definitions document of SUBJECTS (one host's findings), as UTF-8 XML."""
    content = _Content()
    paths = (level_dir, livepatch_dir)
    found = {}
    for s in subjects:
        if uses_rpm(s.host.release):
            raise ExportError(f"OVAL export reads dpkg; {inert(s.host.release, 40)} uses rpm")
        if s.finding.status is not Status.NOT_AFFECTED:
            definition = _definition(s, content, paths)
            found[definition.get("id", "")] = definition
    root = _el(None, DEF, "oval_definitions")
    generator = _el(root, DEF, "generator")
    _el(generator, COMMON, "product_name", "nonstop")
    _el(generator, COMMON, "schema_version", "5.11.1")
    _el(generator, COMMON, "timestamp", timestamp(generated_at))
    for tag, items in (
        ("definitions", found),
        ("tests", content.tests),
        ("objects", content.objects),
        ("states", content.states),
    ):
        if items:
            section = _el(root, DEF, tag)
            section.extend(items[key] for key in sorted(items))
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"
