"""Each export checked against its format's official schema; each returns the errors, [] if valid.

CSAF 2.0: the OASIS schema and the mandatory tests of the spec, as the
``csaf`` package ships and runs them. CycloneDX 1.6: the schema
``cyclonedx-python-lib`` ships, strict. OSV and OpenVEX: the schemas copied
in tests/fixtures/cve/schemas (README.md there names their sources), with
formats (date-time, uri, iri) checked.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from csaf.csaf.v20 import validate as csaf_validate
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[2] / "fixtures" / "cve" / "schemas"


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _errors(name: str, document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in _validator(name).iter_errors(document)]


def osv_errors(record: dict[str, Any]) -> list[str]:
    return _errors("osv-schema.json", record)


def openvex_errors(document: dict[str, Any]) -> list[str]:
    return _errors("openvex-0.2.0-schema.json", document)


def csaf_errors(document: dict[str, Any]) -> list[str]:
    report = csaf_validate(document, preset="basic")
    return [
        f"{result.id} {result.title}: {error.instance_path} {error.message}"
        for result in report.results
        if not result.passed and not result.skipped
        for error in result.errors
    ] or ([] if report.overall_valid else ["invalid, with no error named"])


def cyclonedx_errors(text: str) -> list[str]:
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    return [] if error is None else [str(error)]


def errors(fmt: str, data: bytes) -> list[str]:
    """The schema errors of DATA, an export in FMT (a JSON format), [] if valid."""
    text = data.decode()
    if fmt == "cyclonedx":
        return cyclonedx_errors(text)
    document = json.loads(text)
    if fmt == "osv":
        return [error for record in document for error in osv_errors(record)]
    return {"csaf": csaf_errors, "openvex": openvex_errors}[fmt](document)
