"""A control character (NUL above all) in a free-text query parameter that reaches the catalog is
a 422 on SQLite and PostgreSQL alike: PostgreSQL refuses a NUL in text (a 500 before), SQLite
found no row (a 200 with an empty page)."""

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.settings import Settings
from tests.service.catalog_url import app_over
from tests.service.conftest import Headers


@pytest.fixture
def app(settings: Settings, catalog_engine: Engine) -> Iterator[FastAPI]:
    """conftest's `app`, over the catalog of `catalog_engine` (its `client` and `headers` too)."""
    yield from app_over(settings, catalog_engine)


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/uploads?status=%00", "status"),
        ("/api/v1/uploads?status=loaded%00", "status"),
        ("/api/v1/uploads?status=a%1Fb", "status"),
        ("/api/v1/uploads?status=%7F", "status"),
        ("/api/v1/audit?subject=%00", "subject"),
        ("/api/v1/audit?subject=x%0Ay", "subject"),
        ("/api/v1/audit?route=%00", "route"),
        ("/api/v1/audit?route=%2Fapi%2Fv1%09", "route"),
    ],
)
def test_a_control_character_in_a_text_parameter_is_a_422(
    client: TestClient, headers: dict[str, Headers], path: str, parameter: str
) -> None:
    response = client.get(path, headers=headers["registry"])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == (
        f"query.{parameter}: Value error, control characters are not allowed"
    )


def test_a_trust_gets_the_same_answer(client: TestClient, headers: dict[str, Headers]) -> None:
    response = client.get("/api/v1/uploads?status=%00", headers=headers["trust"])
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/uploads?status=loaded",
        "/api/v1/uploads?status=l%C3%B8st%20%C2%A0",  # non-ASCII letters and spaces pass
        "/api/v1/audit?subject=anonymous&route=%2Fapi%2Fv1%2Fuploads",
    ],
)
def test_printable_text_is_still_a_filter(
    client: TestClient, headers: dict[str, Headers], path: str
) -> None:
    response = client.get(path, headers=headers["registry"])
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []
