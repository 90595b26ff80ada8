"""Ids that reach the catalog are SQL `integer`s, 32-bit on PostgreSQL: an id beyond 2^31 - 1 is
answered as it is on SQLite (a 422 naming the range, or not found), never a 500 or a
"Catalog database error" from the driver's overflow."""

from collections.abc import Iterator

import pytest
from _pytest.monkeypatch import MonkeyPatch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from service import database
from service.cli import app as cli
from service.commands import indicators, keys, report
from service.settings import Settings
from tests.service.catalog_url import app_over, catalog_url
from tests.service.conftest import Headers

BEYOND = 2**31  # the first id a PostgreSQL `integer` cannot hold
RANGE = "less than or equal to 2147483647"


@pytest.fixture
def app(settings: Settings, catalog_engine: Engine) -> Iterator[FastAPI]:
    """conftest's `app`, over the catalog of `catalog_engine` (its `client` and `headers` too)."""
    yield from app_over(settings, catalog_engine)


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/uploads/{BEYOND}",
        f"/api/v1/uploads/{BEYOND}/report.html",
        f"/api/v1/uploads/{2**63 - 1}",
        f"/api/v1/releases/{BEYOND}",
        f"/api/v1/indicators/results?release={BEYOND}",
        f"/api/v1/providers/983974880/profile?release={BEYOND}",
        f"/api/v1/indicators/plan/variation?year=2024&release={BEYOND}",
        f"/api/v1/research-participation?release={BEYOND}",
    ],
)
def test_an_id_beyond_the_catalog_range_is_a_422_naming_the_range(
    client: TestClient, headers: dict[str, Headers], path: str
) -> None:
    response = client.get(path, headers=headers["registry"])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert RANGE in response.json()["detail"]


def test_an_aggregate_release_beyond_the_catalog_range_is_a_422(
    client: TestClient, headers: dict[str, Headers]
) -> None:
    body = {"release": BEYOND, "measures": ["episodes"], "dimensions": ["year"]}
    response = client.post("/api/v1/aggregates", json=body, headers=headers["researcher"])
    assert response.status_code == 422, response.text
    assert RANGE in response.json()["detail"]


@pytest.mark.parametrize(
    "path", ["/api/v1/uploads/2147483647", "/api/v1/uploads/2147483647/report.html"]
)
def test_the_largest_id_is_not_found(
    client: TestClient, headers: dict[str, Headers], path: str
) -> None:
    response = client.get(path, headers=headers["registry"])
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == "no upload with this id"


@pytest.fixture
def cli_env(
    env: dict[str, str], catalog_engine: Engine, monkeypatch: MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The commands' environment on `catalog_engine`'s catalog; the engines they open are
    disposed after the test (a command's process would close their connections at exit)."""
    opened: list[Engine] = []

    def make_engine(config: Settings) -> Engine:
        opened.append(database.make_engine(config))
        return opened[-1]

    for module in (indicators, keys, report):
        monkeypatch.setattr(module, "make_engine", make_engine)
    yield env | {"KVARUS_DATABASE_URL": catalog_url(catalog_engine)}
    for engine in opened:
        engine.dispose()


@pytest.mark.parametrize("upload_id", [str(BEYOND), "3000000000", str(2**63 - 1)])
def test_report_of_an_id_beyond_the_range_is_not_found(
    cli_env: dict[str, str], upload_id: str
) -> None:
    result = CliRunner().invoke(cli, ["report", upload_id], env=cli_env)
    assert result.output == "Not found: no upload with this id\n"
    assert result.exit_code == 1


def test_report_of_the_largest_id_is_not_found(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["report", "2147483647"], env=cli_env)
    assert result.output == "Not found: no upload with this id\n"
    assert result.exit_code == 1


@pytest.mark.parametrize("client_id", [str(BEYOND), "3000000000"])
def test_revoking_an_id_beyond_the_range_is_a_usage_error(
    cli_env: dict[str, str], client_id: str
) -> None:
    result = CliRunner().invoke(cli, ["keys", "revoke", client_id], env=cli_env)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for 'client_id': Input should be {RANGE}" in result.output


def test_revoking_the_largest_id_is_not_found(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["keys", "revoke", "2147483647"], env=cli_env)
    assert result.exit_code == 1, result.output
    assert "Not found: no API client with id 2147483647" in result.output


def test_indicators_of_a_release_beyond_the_range_is_a_usage_error(
    cli_env: dict[str, str],
) -> None:
    result = CliRunner().invoke(cli, ["indicators", "--release", str(BEYOND)], env=cli_env)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--release': Input should be {RANGE}" in result.output
