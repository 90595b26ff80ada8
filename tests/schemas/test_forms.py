"""The data dictionary: Arrow schemas, record models, organisation numbers, the hierarchy."""

import csv
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

import schemas.forms as forms
from schemas.forms import (
    EPISODE_FORMS,
    FORMS,
    RECORD_MODELS,
    Form,
    extract_schema,
    warehouse_schema,
)
from schemas.organisations import Hierarchy, is_valid_orgnr

# The shared reference list sits beside the clone; the package ships a copy of it.
SHARED_CSV = Path(__file__).parents[3] / "shared" / "reference" / "org_hierarchy.csv"
SHIPPED_CSV = Path(__file__).parents[2] / "schemas" / "data" / "org_hierarchy.csv"


def valid_basis() -> dict[str, Any]:
    return {
        "record_id": "r1",
        "episode_id": "e1",
        "patient_pseudonym": "p1",
        "provider_orgnr": "983974880",
        "unit_code": "U1",
        "intake_date": date(2021, 3, 1),
        "referral_date": None,
        "age": 35,
        "sex": 2,
        "treatment_type": 5,
        "primary_substance": 3,
        "icd10": "F11.2",
        "housing": 1,
        "employment": 9,
        "severity": 3,
        "research_consent": 1,
    }


def test_extract_schema_types_and_nullability() -> None:
    schema = extract_schema(Form.NPR_COUNTS)
    assert schema == pa.schema(
        [
            pa.field("provider_orgnr", pa.string(), nullable=False),
            pa.field("year", pa.int32(), nullable=False),
            pa.field("episodes", pa.int32(), nullable=False),
        ]
    )
    basis = extract_schema(Form.BASIS)
    assert basis.field("intake_date").type == pa.date32()
    assert basis.field("referral_date").nullable
    assert not basis.field("age").nullable
    assert len(basis) == 21


@pytest.mark.parametrize("form", EPISODE_FORMS)
def test_warehouse_schema_rekeys_the_pseudonym_and_adds_year_and_upload(form: Form) -> None:
    extract = extract_schema(form)
    stored = warehouse_schema(form)
    assert "patient_pseudonym" not in stored.names
    assert stored.field("patient_key") == pa.field("patient_key", pa.string(), nullable=False)
    # the key takes the pseudonym's place; everything else keeps its place and type
    position = extract.get_field_index("patient_pseudonym")
    assert stored.names[position] == "patient_key"
    assert stored.names[: len(extract)] == [
        "patient_key" if name == "patient_pseudonym" else name for name in extract.names
    ]
    assert stored.names[len(extract) :] == ["year", "upload_id"]
    assert stored.field("year") == pa.field("year", pa.int32(), nullable=False)
    assert stored.field("upload_id") == pa.field("upload_id", pa.int64(), nullable=False)


def test_npr_counts_keeps_its_own_year() -> None:
    stored = warehouse_schema(Form.NPR_COUNTS)
    assert stored.names == ["provider_orgnr", "year", "episodes", "upload_id"]


def test_basis_model_accepts_a_valid_record() -> None:
    record = RECORD_MODELS[Form.BASIS](**valid_basis())
    assert record.model_dump()["age"] == 35
    assert record.model_dump()["audit"] is None


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("age", 12),  # minimum 13
        ("age", 111),  # maximum 110
        ("severity", 0),
        ("sex", 3),  # codes 1, 2, 9
        ("treatment_type", 6),
        ("primary_substance", 7),
        ("research_consent", 2),
        ("icd10", "F20"),  # F10-F19 only
        ("icd10", "F10.22"),  # one decimal at most
        ("provider_orgnr", "98397488"),
        ("audit", 41),
        ("dudit", -1),
        ("intake_date", "31.02.2021"),
    ],
)
def test_basis_model_rejects(column: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        RECORD_MODELS[Form.BASIS](**(valid_basis() | {column: value}))
    assert [error["loc"] for error in caught.value.errors()] == [(column,)]


def test_models_refuse_unknown_columns_and_missing_required_ones() -> None:
    with pytest.raises(ValidationError, match="fnr"):
        RECORD_MODELS[Form.BASIS](**(valid_basis() | {"fnr": "x"}))
    without_age = {k: v for k, v in valid_basis().items() if k != "age"}
    with pytest.raises(ValidationError, match="age"):
        RECORD_MODELS[Form.BASIS](**without_age)


def test_followup_codes_and_ranges() -> None:
    model = RECORD_MODELS[Form.FOLLOWUP]
    base = {
        "record_id": "f1",
        "episode_id": "e1",
        "patient_pseudonym": "p1",
        "provider_orgnr": "983974880",
        "unit_code": "U1",
        "followup_date": date(2022, 3, 1),
        "followup_status": 1,
    }
    assert model(**base).model_dump()["housing"] is None
    for column, value in [("followup_status", 4), ("use_days_30", 31), ("readmitted", 2)]:
        with pytest.raises(ValidationError):
            model(**(base | {column: value}))


def test_every_form_has_a_model_with_its_columns() -> None:
    for form, spec in FORMS.items():
        assert list(RECORD_MODELS[form].model_fields) == list(spec.column_names)


def test_every_organisation_of_the_reference_list_has_a_valid_orgnr() -> None:
    if SHARED_CSV.exists():
        assert SHARED_CSV.read_text(encoding="utf-8") == SHIPPED_CSV.read_text(encoding="utf-8")
    with SHIPPED_CSV.open(encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if row["level"] != "nation"]
    assert len(rows) == 26  # 4 RHFs and 22 HFs
    assert all(is_valid_orgnr(row["orgnr"]) for row in rows)


def test_invalid_orgnr_worked_by_hand() -> None:
    # 983974880: 9*3+8*2+3*7+9*6+7*5+4*4+8*3+8*2 = 209 = 19*11 → remainder 0 → check digit 0.
    assert is_valid_orgnr("983974880")
    assert not is_valid_orgnr("983974881")
    # 00000006x: 6*2 = 12 → remainder 1 → check 10: no valid last digit exists.
    assert not any(is_valid_orgnr(f"00000006{d}") for d in range(10))
    assert not is_valid_orgnr("98397488")
    assert not is_valid_orgnr("98397488O")


def test_rhf_of_a_private_provider() -> None:
    hierarchy = Hierarchy.default()
    provider = hierarchy["991505482"]  # Vestly (fictitious), contracted under Helse Vest
    assert provider.is_private
    assert provider.is_provider
    assert hierarchy.rhf_of("991505482").orgnr == "983658725"
    assert hierarchy.rhf_of("991505482").short_name == "Helse Vest"
    assert hierarchy.rhf_of("983974880").short_name == "Helse Nord"  # an HF
    assert hierarchy.rhf_of("991324968").orgnr == "991324968"  # an RHF is its own


@pytest.mark.parametrize(
    ("utc", "oslo"),
    [
        (datetime(2025, 6, 30, 22, 30, tzinfo=UTC), date(2025, 7, 1)),  # 00:30 summer time
        (datetime(2025, 1, 1, 23, 30, tzinfo=UTC), date(2025, 1, 2)),  # 00:30 winter time
        (datetime(2025, 1, 1, 22, 30, tzinfo=UTC), date(2025, 1, 1)),  # 23:30 winter time
    ],
)
def test_the_register_day_is_norways_not_the_machines(
    utc: datetime, oslo: date, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A record dated today in Norway, loaded after midnight there, was "in the future" by the
    # UTC date of a container (and its file rejected whole).
    class Clock(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return utc.astimezone(tz)

    monkeypatch.setattr(forms, "datetime", Clock)
    assert forms.register_today() == oslo
