"""Every role × every route → the expected status (authorisation is checked before the body)."""

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from schemas.catalog import Upload, ValidationRun
from tests.conftest import PROVIDER_A, PROVIDER_B
from tests.service.conftest import Headers, ReleaseWriter
from tests.service.test_aggregates import episodes

API = "/api/v1"
ROLES = ("anonymous", "trust", "researcher", "registry")
# The shape of `ValidationResult.to_report()` for an empty, passing file.
REPORT: dict[str, Any] = {
    "form": "basis",
    "suite_version": "1",
    "rows": 0,
    "rejected": False,
    "rejection_reasons": [],
    "quarantined_rows": 0,
    "categories": {},
    "checks": [],
}
AGGREGATE = {"measures": ["episodes"], "dimensions": ["sex"]}

# (method, path, json body or None): statuses for anonymous, trust, researcher, registry.
# Upload 1 holds only PROVIDER_B, upload 2 only PROVIDER_A (the trust's own provider).
MATRIX: list[tuple[str, str, Any, tuple[int, int, int, int]]] = [
    ("GET", "/health", None, (200, 200, 200, 200)),
    ("GET", "/ready", None, (200, 200, 200, 200)),
    ("GET", f"{API}/indicators", None, (200, 200, 200, 200)),
    ("GET", f"{API}/indicators/results", None, (200, 200, 200, 200)),
    ("GET", f"{API}/providers/{PROVIDER_A}/profile", None, (200, 200, 200, 200)),
    ("GET", f"{API}/indicators/plan/variation?year=2024", None, (200, 200, 200, 200)),
    ("GET", f"{API}/research-participation", None, (200, 200, 200, 200)),
    ("GET", f"{API}/releases", None, (200, 200, 200, 200)),
    ("GET", f"{API}/releases/1", None, (200, 200, 200, 200)),
    ("POST", f"{API}/releases", {"unknown": 1}, (401, 403, 403, 422)),
    ("POST", f"{API}/uploads", None, (401, 403, 403, 422)),
    ("GET", f"{API}/uploads", None, (401, 200, 403, 200)),
    # Another provider's upload: a trust gets the 404 of a missing id (no probing of ids).
    ("GET", f"{API}/uploads/1", None, (401, 404, 403, 200)),
    ("GET", f"{API}/uploads/2", None, (401, 200, 403, 200)),
    ("GET", f"{API}/uploads/1/report.html", None, (401, 404, 403, 200)),
    ("GET", f"{API}/uploads/2/report.html", None, (401, 200, 403, 200)),
    ("POST", f"{API}/aggregates", AGGREGATE, (401, 403, 200, 200)),
    ("GET", f"{API}/audit", None, (401, 403, 403, 200)),
]


@pytest.fixture
def world(
    app: FastAPI, client: TestClient, publish: ReleaseWriter, headers: dict[str, Headers]
) -> tuple[TestClient, dict[str, Headers]]:
    publish(1, basis=episodes(PROVIDER_A, 12, tag="a"))
    with Session(app.state.engine) as session:
        for provider in (PROVIDER_B, PROVIDER_A):
            session.add(
                Upload(
                    file_sha256="0" * 64,
                    form="basis",
                    filename="b.csv",
                    providers=provider,
                    status="loaded",
                )
            )
        session.commit()
        for upload_id in (1, 2):
            session.add(
                ValidationRun(
                    upload_id=upload_id,
                    form="basis",
                    suite_version="1",
                    passed=True,
                    report=REPORT,
                )
            )
        session.commit()
    return client, headers


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path", "body", "expected"), MATRIX)
def test_role_matrix(
    world: tuple[TestClient, dict[str, Headers]],
    role: str,
    method: str,
    path: str,
    body: Any,
    expected: tuple[int, int, int, int],
) -> None:
    client, headers = world
    response = client.request(method, path, json=body, headers=headers[role])
    assert response.status_code == expected[ROLES.index(role)], response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
    if response.status_code == 401:
        assert response.headers["www-authenticate"] == "Bearer"
