"""Property-based API testing (schemathesis) against the OpenAPI schema the real server serves.

Every operation gets generated requests, valid and invalid, authenticated as
an admin with every scope (admin paths) or as a registered host (host paths,
with that host's id so check-ins reach the database). Checks: no 5xx, and
every status code, content type and response body conforms to the schema.
The default run is small for CI; `make fuzz` (pytest -m fuzz) runs a larger one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.conftest import Host, LiveServer, checkin, create_key, inventory, register

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CI_EXAMPLES = 12
FUZZ_EXAMPLES = 300


@dataclass
class Target:
    server: LiveServer
    host: Host
    schema: Any


@pytest.fixture(scope="module")
def fuzz_target(server: LiveServer) -> Target:
    host = register(server, create_key(server)["key"])
    checkin(server, host, inventory("fuzzed"))
    return Target(server, host, schemathesis.openapi.from_url(f"{server.url}/openapi.json"))


def exercise(case: Any, target: Target) -> None:
    if case.path.startswith("/api/v1/admin"):
        token = target.server.admin_token
    else:
        token = target.host.token
        # Aim host calls at the registered host (except unregistering it, which ends the run).
        if "host_id" in (case.path_parameters or {}) and case.method != "DELETE":
            case.path_parameters["host_id"] = target.host.id
    case.call_and_validate(
        base_url=target.server.url,
        headers={"Authorization": f"Bearer {token}"},
        checks=CHECKS,
        timeout=30,
    )


def run_all_operations(target: Target, max_examples: int) -> int:
    """Generate and check MAX_EXAMPLES valid and as many invalid requests per operation."""
    operations = [result.ok() for result in target.schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=max_examples,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def check(case: Any) -> None:
                exercise(case, target)

            try:
                check()
            except Unsatisfiable:
                # An operation without inputs (GET /healthz) has no invalid form to generate.
                if mode is GenerationMode.POSITIVE:
                    raise
    return len(operations)


def test_api_conforms_to_its_schema(fuzz_target: Target) -> None:
    assert run_all_operations(fuzz_target, CI_EXAMPLES) >= 20


@pytest.mark.fuzz
def test_api_conforms_to_its_schema_long(fuzz_target: Target) -> None:
    run_all_operations(fuzz_target, FUZZ_EXAMPLES)
