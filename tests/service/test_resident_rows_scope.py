"""A trust sees the numbers behind its own suppressed caregiver rows, never behind its resident
rows: an HF's resident row counts the patients living in its area, most of them treated by other
providers, so its orgnr being the trust's does not make the patients the trust's."""

from typing import Any

import pyarrow as pa
from fastapi.testclient import TestClient

from indicators.results import RESULT_SCHEMA
from service.auth import ANONYMOUS, Principal
from service.published import ResultQuery, select_results
from tests.conftest import PROVIDER_A
from tests.service.conftest import Headers, ReleaseWriter, result_row

API = "/api/v1"
TRUST_A = Principal(subject="client:1", role="trust", provider=PROVIDER_A)
REGISTRY = Principal(subject="client:2", role="registry")


def _suppressed(context: str, level: str, denominator: int, unit: str | None = None) -> Any:
    return result_row(
        indicator_id="study",
        year=2024,
        context=context,
        level=level,
        orgnr=PROVIDER_A,
        unit_code=unit,
        name="Finnmarkssykehuset",
        numerator=1,
        denominator=denominator,
        value=1 / denominator,
        suppressed=True,
        suppression_reason="min_denominator",
    )


ROWS = [
    _suppressed("caregiver", "provider", 3),
    _suppressed("caregiver", "hf", 3),
    _suppressed("caregiver", "unit", 2, unit="U1"),
    _suppressed("resident", "hf", 4),
]


def _numbers(rows: list[dict[str, Any]]) -> dict[tuple[str, str], int | None]:
    return {(r["context"], r["level"]): r["denominator"] for r in rows}


def test_select_results_withholds_a_trusts_suppressed_resident_row() -> None:
    table = pa.Table.from_pylist([r | {"release": 1} for r in ROWS], schema=RESULT_SCHEMA)
    query = ResultQuery(indicator="study")
    assert _numbers(select_results(table, query, TRUST_A)) == {
        ("caregiver", "provider"): 3,
        ("caregiver", "hf"): 3,
        ("caregiver", "unit"): 2,
        ("resident", "hf"): None,
    }
    resident = [r for r in select_results(table, query, TRUST_A) if r["context"] == "resident"]
    assert [(r["numerator"], r["value"], r["suppressed"]) for r in resident] == [(None, None, True)]
    assert _numbers(select_results(table, query, REGISTRY))[("resident", "hf")] == 4
    assert _numbers(select_results(table, query, ANONYMOUS)) == {
        ("caregiver", "provider"): None,
        ("caregiver", "hf"): None,
        ("resident", "hf"): None,
    }


def test_the_results_route_shows_a_trust_no_resident_denominator(
    client: TestClient, publish: ReleaseWriter, headers: dict[str, Headers]
) -> None:
    publish(1, results=ROWS)
    params = {"indicator": "study", "orgnr": PROVIDER_A}
    trust = client.get(f"{API}/indicators/results", params=params, headers=headers["trust"])
    assert trust.status_code == 200
    assert _numbers(trust.json()["items"]) == {
        ("caregiver", "provider"): 3,
        ("caregiver", "hf"): 3,
        ("caregiver", "unit"): 2,
        ("resident", "hf"): None,
    }
    registry = client.get(f"{API}/indicators/results", params=params, headers=headers["registry"])
    assert _numbers(registry.json()["items"])[("resident", "hf")] == 4
