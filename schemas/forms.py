"""The data dictionary: extract specification version 1, one `FormSpec` per form.

This module is the single source of the forms' columns. The Arrow schemas, the pydantic record
models, the validation suites and the synthetic generator are all built from it.

Two shapes of every form:
- the *extract* shape: the columns a registration system sends (EXTRACT_SPEC.md),
  `patient_pseudonym` as received;
- the *warehouse* shape: what the register stores. `patient_pseudonym` is replaced by `patient_key`
  (keyed HMAC-SHA256 of the source pseudonym, hex), and `year` (the partition, from the form's year
  date) and `upload_id` (the ledger row that loaded it) are added.
"""

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.codes import (
    EMPLOYMENT,
    END_REASON,
    FOLLOWUP_STATUS,
    HOUSING,
    MEASUREMENT_STATUS,
    NO_YES,
    PLAN,
    PRIMARY_SUBSTANCE,
    SEX,
    TREATMENT_TYPE,
    CodeList,
)

SPEC_VERSION: Final = 1

# The register's day is Norway's: a date "after today" is judged by it, not by the machine's zone
# (a container runs on UTC, one or two hours behind Oslo after midnight). pandas requires tzdata,
# so the zone is known where the system has no zone files.
REGISTER_ZONE: Final = ZoneInfo("Europe/Oslo")


def register_today() -> date:
    """Today's date in Norway."""
    return datetime.now(REGISTER_ZONE).date()


ColumnKind = Literal["text", "orgnr", "date", "integer"]

# ICD-10 chapter F1x (mental and behavioural disorders due to psychoactive substance use), F10-F19,
# optionally with one decimal (EXTRACT_SPEC.md).
ICD10_PATTERN: Final = r"^F1[0-9](\.[0-9])?$"
ORGNR_PATTERN: Final = r"^[0-9]{9}$"

PSEUDONYM_COLUMN: Final = "patient_pseudonym"
PATIENT_KEY_COLUMN: Final = "patient_key"


class Form(StrEnum):
    BASIS = "basis"
    MEASUREMENT = "measurement"
    DISCHARGE = "discharge"
    FOLLOWUP = "followup"
    OPTOUT = "optout"
    NPR_COUNTS = "npr_counts"


# The forms that describe an episode and are stored in the warehouse as episode tables.
EPISODE_FORMS: Final = (Form.BASIS, Form.MEASUREMENT, Form.DISCHARGE, Form.FOLLOWUP)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: ColumnKind
    required: bool
    codes: CodeList | None = None
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    description: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.kind]


_ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "text": pa.string(),
    "orgnr": pa.string(),
    "date": pa.date32(),
    "integer": pa.int32(),
}


@dataclass(frozen=True)
class FormSpec:
    form: Form
    columns: tuple[ColumnSpec, ...]
    # The date that places a record in a year (the partition); None for npr_counts (has `year`).
    year_column: str | None
    description: str

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> ColumnSpec:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.required)

    @property
    def stored(self) -> bool:
        """Whether the form is kept as a warehouse table (optout only triggers erasure)."""
        return self.form is not Form.OPTOUT

    @property
    def has_pseudonym(self) -> bool:
        return PSEUDONYM_COLUMN in self.column_names


def _text(
    name: str, *, required: bool = True, pattern: str | None = None, d: str = ""
) -> ColumnSpec:
    return ColumnSpec(name, "text", required, pattern=pattern, description=d)


def _orgnr(name: str, *, required: bool = True, d: str = "") -> ColumnSpec:
    return ColumnSpec(name, "orgnr", required, pattern=ORGNR_PATTERN, description=d)


def _date(name: str, *, required: bool = True, d: str = "") -> ColumnSpec:
    return ColumnSpec(name, "date", required, description=d)


def _code(name: str, codes: CodeList, *, required: bool = True, d: str = "") -> ColumnSpec:
    return ColumnSpec(name, "integer", required, codes=codes, description=d)


def _int(name: str, lo: int, hi: int | None, *, required: bool = True, d: str = "") -> ColumnSpec:
    return ColumnSpec(name, "integer", required, minimum=lo, maximum=hi, description=d)


COMMON_COLUMNS: Final = (
    _text(
        "record_id", d="Unique within the form; a re-sent record_id supersedes the earlier record"
    ),
    _text("episode_id", d="The treatment course"),
    _text(
        PSEUDONYM_COLUMN, d="The source system's pseudonym; re-keyed by the register, never stored"
    ),
    _orgnr("provider_orgnr", d="The provider (HF or private provider) that treated the patient"),
    _text("unit_code", d="The treating unit within the provider"),
)

FORMS: Final[dict[Form, FormSpec]] = {
    Form.BASIS: FormSpec(
        Form.BASIS,
        (
            *COMMON_COLUMNS,
            _date("intake_date"),
            _date("referral_date", required=False, d="Not after intake_date"),
            _int("age", 13, 110),
            _code("sex", SEX),
            _orgnr("home_hf_orgnr", required=False, d="The HF of the patient's home area"),
            _code("treatment_type", TREATMENT_TYPE),
            _code("primary_substance", PRIMARY_SUBSTANCE),
            _text("icd10", pattern=ICD10_PATTERN, d="F10-F19, optionally with one decimal"),
            _int("audit", 0, 40, required=False, d="AUDIT score"),
            _int("dudit", 0, 44, required=False, d="DUDIT score"),
            _code("housing", HOUSING),
            _code("employment", EMPLOYMENT),
            _code("injecting_6m", NO_YES, required=False, d="Injecting use the last 6 months"),
            _int("severity", 1, 5, d="Self-rated severity"),
            _code("research_consent", NO_YES, d="Consent to be contacted for research"),
            _text("clinical_study_id", required=False, d="Set when enrolled in a clinical study"),
        ),
        "intake_date",
        "Intake (basis registration)",
    ),
    Form.MEASUREMENT: FormSpec(
        Form.MEASUREMENT,
        (
            *COMMON_COLUMNS,
            _date("measure_date", d="Not before the episode's intake"),
            _code("status", MEASUREMENT_STATUS),
            _code("treatment_plan", PLAN),
            _code("crisis_plan", PLAN),
            _int("benefit", 1, 5, required=False, d="Perceived benefit"),
            _int("use_days_30", 0, 30, required=False, d="Days with substance use, last 30"),
            _text("clinical_study_id", required=False),
        ),
        "measure_date",
        "Measurement point (about every 3 months in treatment)",
    ),
    Form.DISCHARGE: FormSpec(
        Form.DISCHARGE,
        (
            *COMMON_COLUMNS,
            _date("discharge_date", d="Not before the episode's intake"),
            _code("end_reason", END_REASON),
            _int("audit", 0, 40, required=False),
            _int("dudit", 0, 44, required=False),
            _code("housing", HOUSING),
            _code("employment", EMPLOYMENT),
            _code("followup_arranged", NO_YES),
            _int("satisfaction", 1, 5, required=False),
        ),
        "discharge_date",
        "Discharge",
    ),
    Form.FOLLOWUP: FormSpec(
        Form.FOLLOWUP,
        (
            *COMMON_COLUMNS,
            _date("followup_date"),
            _code("followup_status", FOLLOWUP_STATUS),
            _int("use_days_30", 0, 30, required=False),
            _code("housing", HOUSING, required=False),
            _code("employment", EMPLOYMENT, required=False),
            _code("readmitted", NO_YES, required=False),
        ),
        "followup_date",
        "One-year follow-up",
    ),
    Form.OPTOUT: FormSpec(
        Form.OPTOUT,
        (
            _text("record_id"),
            _text(PSEUDONYM_COLUMN),
            _orgnr("provider_orgnr"),
            _date("optout_date"),
        ),
        "optout_date",
        "Opt-out (reservation): erases every record of the patient",
    ),
    Form.NPR_COUNTS: FormSpec(
        Form.NPR_COUNTS,
        (
            _orgnr("provider_orgnr"),
            _int("year", 2000, 2100),
            _int("episodes", 0, None),
        ),
        None,
        "Reference: episodes counted by the national patient register (NPR), for coverage",
    ),
}


# The raw extract table's schema metadata key under which the reader (`etl.read.read_extract`)
# leaves notes for the user about the file (a JSON list of texts, never a value of the file: a
# workbook's other sheet that holds data and was not read). The validation report carries them as
# `notes`.
READ_NOTES: Final = b"kvarus.read_notes"


def extract_schema(form: Form) -> pa.Schema:
    """The typed Arrow schema of a form as received (after normalisation)."""
    return pa.schema(
        [pa.field(c.name, c.arrow_type, nullable=not c.required) for c in FORMS[form].columns]
    )


def warehouse_schema(form: Form) -> pa.Schema:
    """The Arrow schema of a form's warehouse table."""
    spec = FORMS[form]
    fields: list[pa.Field] = []
    for column in spec.columns:
        if column.name == PSEUDONYM_COLUMN:
            fields.append(pa.field(PATIENT_KEY_COLUMN, pa.string(), nullable=False))
        else:
            fields.append(pa.field(column.name, column.arrow_type, nullable=not column.required))
    if spec.year_column is not None:
        fields.append(pa.field("year", pa.int32(), nullable=False))
    fields.append(pa.field("upload_id", pa.int64(), nullable=False))
    return pa.schema(fields)


_PYTHON_TYPES: Final[dict[str, type]] = {"text": str, "orgnr": str, "date": date, "integer": int}


def _record_model(spec: FormSpec) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for column in spec.columns:
        python_type: Any = _PYTHON_TYPES[column.kind]
        constraints: dict[str, Any] = {"description": column.description or None}
        if column.minimum is not None:
            constraints["ge"] = column.minimum
        if column.maximum is not None:
            constraints["le"] = column.maximum
        if column.pattern is not None:
            constraints["pattern"] = column.pattern
        if column.codes is not None:
            python_type = Literal[tuple(sorted(column.codes.values))]
        if column.required:
            fields[column.name] = (python_type, Field(**constraints))
        else:
            fields[column.name] = (python_type | None, Field(default=None, **constraints))
    model_name = "".join(part.title() for part in spec.form.value.split("_")) + "Record"
    return create_model(
        model_name,
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__=spec.description,
        **fields,
    )


# One pydantic model per form, for validating single records (API, tests) and for documentation.
RECORD_MODELS: Final[dict[Form, type[BaseModel]]] = {
    form: _record_model(spec) for form, spec in FORMS.items()
}
