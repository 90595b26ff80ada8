"""What a client types stays out of the audit log and the problem bodies; routes by template."""

from typing import Any

from fastapi.testclient import TestClient

from etl.privacy import is_identity_number
from tests.service.conftest import Headers, ReleaseWriter

API = "/api/v1"
# A valid identity number (both check digits hold), as a client might type one anywhere.
IDENTITY = "01019000083"


def audit_rows(
    client: TestClient, headers: dict[str, Headers], **params: str
) -> list[dict[str, Any]]:
    page = client.get(f"{API}/audit", params=params, headers=headers["registry"])
    assert page.status_code == 200
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def test_the_identity_number_is_real() -> None:
    assert is_identity_number(IDENTITY)


class TestAuditRoutes:
    def test_rows_hold_route_templates_and_are_found_by_them(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        publish(1)
        registry = headers["registry"]
        assert client.get(f"{API}/uploads/5", headers=registry).status_code == 404
        assert client.get(f"{API}/uploads/7", headers=registry).status_code == 404
        assert client.get(f"{API}/releases/1", headers=registry).status_code == 200
        assert client.get(f"{API}/nope/{IDENTITY}", headers=registry).status_code == 404
        found = audit_rows(client, headers, route=f"{API}/uploads/{{upload_id}}")
        assert [(e["route"], e["status"]) for e in found] == [
            (f"{API}/uploads/{{upload_id}}", 404),
            (f"{API}/uploads/{{upload_id}}", 404),
        ]
        routes = [e["route"] for e in audit_rows(client, headers)]
        assert routes[1:] == [
            "(no route)",
            f"{API}/releases/{{number}}",
            f"{API}/uploads/{{upload_id}}",
            f"{API}/uploads/{{upload_id}}",
        ]

    def test_validation_errors_name_route_parameters(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        publish(1)
        answer = client.get(f"{API}/indicators/results", params={"format": "xml"})
        assert answer.status_code == 422
        assert answer.json()["detail"] == "query.format: Input should be 'json' or 'csv'"
        answer = client.get(f"{API}/uploads/abc", headers=headers["registry"])
        assert answer.json()["detail"] == (
            "path.upload_id: Input should be a valid integer, unable to parse string as an integer"
        )


class TestTypedValuesStayOut:
    def test_problem_instance_is_the_template(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        publish(1)
        answer = client.get(f"{API}/providers/{IDENTITY}/profile")
        assert answer.status_code == 422
        assert answer.json()["instance"] == f"{API}/providers/{{orgnr}}/profile"
        assert IDENTITY not in answer.text
        unknown = client.get(f"{API}/nothing/{IDENTITY}")
        assert unknown.status_code == 404
        assert unknown.json()["instance"] is None
        assert IDENTITY not in unknown.text

    def test_audit_query_keeps_only_safe_values(
        self, client: TestClient, headers: dict[str, Headers], publish: ReleaseWriter
    ) -> None:
        publish(1)
        registry = headers["registry"]
        asked = [
            # (path, query): the query string the audit row holds
            (f"{API}/uploads?provider={IDENTITY}", "provider=<withheld>"),
            (f"{API}/uploads?provider=983974880&limit=5&form=basis", None),
            # Free text is never stored; an int that parses but has ten digits neither.
            (f"{API}/uploads?status=Ola%20Nordmann&offset=0", "status=<withheld>&offset=0"),
            (f"{API}/indicators/results?release=1019000083", "release=<withheld>"),
            # Invalid values and undeclared names are withheld.
            (f"{API}/indicators/results?format=xml&level=hf", "format=<withheld>&level=hf"),
            (f"{API}/indicators/results?{IDENTITY}=1", "<unknown>=<withheld>"),
            # Repeatable and closed-vocabulary parameters keep their values.
            (f"{API}/indicators/results?indicator=plan&year=2023&year=2024", None),
            (f"{API}/indicators/results?indicator=x{IDENTITY}", "indicator=<withheld>"),
            (f"{API}/nothing?year=2024", "<unknown>=<withheld>"),
        ]
        for url, _ in asked:
            client.get(url, headers=registry)
        rows = audit_rows(client, headers, limit="50")
        stored = [e["query"] for e in reversed(rows)]
        expected = [q if q is not None else url.split("?", 1)[1] for url, q in asked]
        assert stored == expected
        assert all(IDENTITY not in (e["query"] + e["route"]) for e in rows)
        assert all("1019000083" not in e["query"] for e in rows)


class TestUnknownIndicator:
    def test_unknown_id_is_404_and_known_without_rows_is_empty(
        self, client: TestClient, publish: ReleaseWriter
    ) -> None:
        publish(1)
        unknown = client.get(f"{API}/indicators/results", params={"indicator": "nope"})
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        assert unknown.json()["detail"] == (
            "no indicator with this id in the catalogue (GET /api/v1/indicators lists them)"
        )
        # `screening` is in the catalogue; the test release has no rows of it.
        empty = client.get(f"{API}/indicators/results", params={"indicator": "screening"})
        assert empty.status_code == 200
        assert empty.json() == {"release": 1, "items": []}
        csv = client.get(f"{API}/indicators/results?indicator=nope&format=csv")
        assert csv.status_code == 404


def test_an_unknown_release_number_is_not_echoed(
    client: TestClient, publish: ReleaseWriter
) -> None:
    """An identity number without its leading zero is a valid release number: the 404 must not
    repeat it."""
    publish(1)
    typed = IDENTITY.lstrip("0")
    answer = client.get(f"{API}/indicators/results", params={"release": typed})
    assert answer.status_code == 404
    assert answer.json()["detail"] == "no such release, or it is retired"
    assert typed not in answer.text
