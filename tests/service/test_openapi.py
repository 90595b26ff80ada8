"""Schemathesis over the OpenAPI schema: no 5xx, and every response matches the schema.

The operations are driven one by one with `APIOperation.as_strategy()` under hypothesis:
schemathesis 4.32's pytest loaders read `request.node._nodeid`, which pytest 9.2 no longer has.
"""

from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import PROVIDER_A
from tests.service.conftest import Headers, ReleaseWriter
from tests.service.test_aggregates import episodes

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Uploads run the ETL (Great Expectations) per example and publishing writes a release: both are
# covered by their own tests and would not fit this test's time budget.
SKIPPED = {("POST", "/api/v1/uploads"), ("POST", "/api/v1/releases")}


def test_api_conforms(app: FastAPI, publish: ReleaseWriter, headers: dict[str, Headers]) -> None:
    publish(1, basis=episodes(PROVIDER_A, 12, tag="a"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tested: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), "the OpenAPI schema must be valid"
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        tested.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=12,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: Any) -> None:
            for who in ("registry", "anonymous"):
                case.call_and_validate(headers=dict(headers[who]), checks=CHECKS)

        conforms()
    assert len(tested) == 14
