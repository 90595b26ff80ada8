"""The audit log says which object was read: path parameters (and a created object's id) are in
the row's `query` as `{name}=value`, under the same safety rules as query values."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from service import audit
from tests.conftest import PROVIDER_A
from tests.service.conftest import Headers, ReleaseWriter

API = "/api/v1"
# A valid identity number (both check digits hold), as a client might type one into a path.
IDENTITY = "01019000083"


def audit_queries(client: TestClient, headers: dict[str, Headers]) -> list[tuple[str, str, str]]:
    """(method, route, query) of every audit row, oldest first (the audit read itself left out)."""
    page = client.get(f"{API}/audit", params={"limit": "100"}, headers=headers["registry"])
    assert page.status_code == 200
    items: list[dict[str, Any]] = page.json()["items"]
    return [(e["method"], e["route"], e["query"]) for e in reversed(items)]


def test_path_parameters_are_recorded(
    client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
) -> None:
    publish(1)
    registry = headers["registry"]
    asked = [
        # (path, status, (route template, stored query))
        (f"{API}/uploads/12", 404, ("/uploads/{upload_id}", "{upload_id}=12")),
        (
            f"{API}/uploads/12/report.html",
            404,
            ("/uploads/{upload_id}/report.html", "{upload_id}=12"),
        ),
        (f"{API}/releases/1", 200, ("/releases/{number}", "{number}=1")),
        (
            f"{API}/providers/{PROVIDER_A}/profile?release=1",
            200,
            ("/providers/{orgnr}/profile", f"{{orgnr}}={PROVIDER_A}&release=1"),
        ),
        (
            f"{API}/indicators/plan/variation?year=2024",
            200,
            ("/indicators/{indicator_id}/variation", "{indicator_id}=plan&year=2024"),
        ),
        # Values the route refuses, free text and anything of ten digits or more: withheld.
        (f"{API}/uploads/{IDENTITY}", 404, ("/uploads/{upload_id}", "{upload_id}=<withheld>")),
        (f"{API}/uploads/abc", 422, ("/uploads/{upload_id}", "{upload_id}=<withheld>")),
        (
            f"{API}/providers/{IDENTITY}/profile",
            422,
            ("/providers/{orgnr}/profile", "{orgnr}=<withheld>"),
        ),
        (
            f"{API}/indicators/Ola%20Nordmann/variation?year=2024",
            404,
            ("/indicators/{indicator_id}/variation", "{indicator_id}=<withheld>&year=2024"),
        ),
    ]
    for path, status, _ in asked:
        assert client.get(path, headers=registry).status_code == status, path
    stored = audit_queries(client, headers)
    assert stored == [("GET", API + route, query) for _, _, (route, query) in asked]
    assert all(IDENTITY.lstrip("0") not in query for _, _, query in stored)
    assert all("Ola" not in query for _, _, query in stored)


def test_a_created_object_is_recorded_under_its_routes_name(
    app: FastAPI, client: TestClient, headers: dict[str, Headers]
) -> None:
    @app.get(f"{API}/test-created")
    def made(request: Request) -> dict[str, int]:
        audit.note(request, rows=1, created=("upload_id", 13))
        return {"id": 13}

    assert client.get(f"{API}/test-created?x=1").status_code == 200
    assert audit_queries(client, headers) == [
        ("GET", f"{API}/test-created", "{upload_id}=13&<unknown>=<withheld>")
    ]


def test_audited_query_on_no_route_keeps_nothing_of_the_path() -> None:
    assert audit.audited_query(None, f"/api/v1/x/{IDENTITY}", b"") == ""
    assert audit.created_part(("upload_id", 10**10)) == "{upload_id}=<withheld>"


def test_an_upload_request_is_audited_with_the_id_it_created(
    client: TestClient, headers: dict[str, Headers]
) -> None:
    response = client.post(
        f"{API}/uploads",
        files={"file": ("basis.csv", b"x;y\n1;2\n", "text/csv")},
        data={"form": "basis"},
        headers=headers["registry"],
    )
    assert response.status_code == 202, response.text
    created = response.json()["id"]
    posted = [row for row in audit_queries(client, headers) if row[0] == "POST"]
    assert posted == [("POST", f"{API}/uploads", f"{{upload_id}}={created}")]
