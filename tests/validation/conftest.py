"""Tiny raw extracts for the validation tests: every column text, nulls for empty cells."""

from datetime import date
from typing import Any

import pyarrow as pa
import pytest

from schemas.forms import FORMS, Form

TODAY = date(2025, 1, 1)
PROVIDER = "983974678"  # Helse Stavanger HF (schemas/data/org_hierarchy.csv)
OTHER_PROVIDER = "983974899"  # Universitetssykehuset Nord-Norge HF
KNOWN = frozenset({PROVIDER, OTHER_PROVIDER})

# One clean row per form, as a registration system would export it.
CLEAN: dict[Form, dict[str, str | None]] = {
    Form.BASIS: {
        "episode_id": "e1",
        "patient_pseudonym": "p1",
        "provider_orgnr": PROVIDER,
        "unit_code": "u1",
        "intake_date": "01.02.2024",
        "referral_date": "2024-01-15",
        "age": "40",
        "sex": "1",
        "home_hf_orgnr": PROVIDER,
        "treatment_type": "2",
        "primary_substance": "1",
        "icd10": "F10.2",
        "audit": "12",
        "dudit": "3",
        "housing": "1",
        "employment": "1",
        "injecting_6m": "0",
        "severity": "3",
        "research_consent": "1",
        "clinical_study_id": None,
    },
    Form.MEASUREMENT: {
        "episode_id": "e1",
        "patient_pseudonym": "p1",
        "provider_orgnr": PROVIDER,
        "unit_code": "u1",
        "measure_date": "01.05.2024",
        "status": "1",
        "treatment_plan": "2",
        "crisis_plan": "1",
        "benefit": "4",
        "use_days_30": "3",
        "clinical_study_id": None,
    },
    Form.DISCHARGE: {
        "episode_id": "e1",
        "patient_pseudonym": "p1",
        "provider_orgnr": PROVIDER,
        "unit_code": "u1",
        "discharge_date": "2024-06-30",
        "end_reason": "1",
        "audit": "8",
        "dudit": "0",
        "housing": "2",
        "employment": "3",
        "followup_arranged": "1",
        "satisfaction": "4",
    },
    Form.FOLLOWUP: {
        "episode_id": "e1",
        "patient_pseudonym": "p1",
        "provider_orgnr": PROVIDER,
        "unit_code": "u1",
        "followup_date": "30.06.2024",
        "followup_status": "1",
        "use_days_30": "0",
        "housing": "1",
        "employment": "1",
        "readmitted": "0",
    },
    Form.OPTOUT: {
        "patient_pseudonym": "p1",
        "provider_orgnr": PROVIDER,
        "optout_date": "2024-12-01",
    },
    Form.NPR_COUNTS: {"provider_orgnr": PROVIDER, "year": "2024", "episodes": "120"},
}


def _distinct(form: Form, i: int) -> dict[str, str]:
    """What row `i` holds by default to be unique: its record id r1, r2, ...; an npr_counts row,
    keyed by provider and year, the years 2024, 2023, ... (2000-2024 again after 25 rows)."""
    if form is Form.NPR_COUNTS:
        return {"year": str(2024 - (i - 1) % 25)}
    return {"record_id": f"r{i}"}


def raw_table(form: Form, rows: list[dict[str, Any]]) -> pa.Table:
    """A raw table of the form's columns (all `pa.string()`), of distinct rows by default (record
    ids r1, r2, ...; npr_counts: years 2024, 2023, ...)."""
    names = list(FORMS[form].column_names)
    filled = [{**CLEAN[form], **_distinct(form, i), **row} for i, row in enumerate(rows, start=1)]
    return pa.table(
        {name: pa.array([row.get(name) for row in filled], pa.string()) for name in names}
    )


@pytest.fixture
def clean_basis() -> pa.Table:
    return raw_table(Form.BASIS, [{}, {}, {}])
