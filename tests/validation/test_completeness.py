"""Completeness over time, counted by hand on tiny warehouse tables."""

import json
from datetime import date

import pyarrow as pa
import pytest

from schemas.forms import Form
from validation.completeness import completeness, variables

A, B = "974631407", "983974899"


def _basis() -> pa.Table:
    # Provider A 2024: 4 records, audit filled in 3; provider B 2024: 1 record, audit empty;
    # provider A 2023: 1 record, audit filled.
    return pa.table(
        {
            "provider_orgnr": [A, A, A, A, B, A],
            "year": pa.array([2024, 2024, 2024, 2024, 2024, 2023], pa.int32()),
            "audit": pa.array([10, 3, None, 40, None, 5], pa.int32()),
            "referral_date": pa.array([date(2024, 1, 1), None, None, None, None, None]),
        }
    )


def _rows(result: pa.Table, variable: str) -> list[tuple[object, ...]]:
    return [
        (
            r["provider_orgnr"],
            r["year"],
            r["records"],
            r["filled"],
            r["share_filled"],
            r["quarantined"],
            r["share_quarantined"],
        )
        for r in result.to_pylist()
        if r["variable"] == variable
    ]


def test_filled_share_per_provider_and_year() -> None:
    result = completeness({Form.BASIS: _basis()})
    assert _rows(result, "audit") == [
        (A, 2023, 1, 1, 1.0, 0, 0.0),
        (A, 2024, 4, 3, 0.75, 0, 0.0),
        (B, 2024, 1, 0, 0.0, 0, 0.0),
    ]
    assert _rows(result, "referral_date") == [
        (A, 2023, 1, 0, 0.0, 0, 0.0),
        (A, 2024, 4, 1, 0.25, 0, 0.0),
        (B, 2024, 1, 0, 0.0, 0, 0.0),
    ]
    # Only the variables present in the table are reported, never the identifiers.
    assert set(result.column("variable").to_pylist()) == {"audit", "referral_date"}
    assert "patient_pseudonym" not in variables(Form.BASIS)
    assert "age" in variables(Form.BASIS)


def test_quarantined_share_from_the_quarantine_json() -> None:
    quarantine = pa.table(
        {
            "form": ["basis", "basis", "basis", "measurement"],
            "record_id": ["q1", "q1", "q2", "q3"],  # q1 failed two checks: one record
            "values": [
                json.dumps({"provider_orgnr": A, "intake_date": "2024-03-01"}),
                json.dumps({"provider_orgnr": A, "intake_date": "2024-03-01"}),
                json.dumps({"provider_orgnr": A, "intake_date": "2024-05-01"}),
                json.dumps({"provider_orgnr": A, "measure_date": "2024-05-01"}),
            ],
        }
    )
    result = completeness({Form.BASIS: _basis()}, quarantine)
    # A 2024: 4 stored + 2 quarantined basis records → 2 / 6.
    assert _rows(result, "audit") == [
        (A, 2023, 1, 1, 1.0, 0, 0.0),
        (A, 2024, 4, 3, 0.75, 2, pytest.approx(2 / 6)),
        (B, 2024, 1, 0, 0.0, 0, 0.0),
    ]


def test_quarantine_with_provider_and_year_columns() -> None:
    quarantine = pa.table(
        {"form": ["basis"], "record_id": ["q9"], "provider_orgnr": [B], "year": [2024]}
    )
    result = completeness({Form.BASIS: _basis()}, quarantine)
    assert _rows(result, "audit")[2] == (B, 2024, 1, 0, 0.0, 1, 0.5)


def test_no_tables_no_rows() -> None:
    assert completeness({}).num_rows == 0
