"""The validated vocabulary in which indicator definitions are written.

A definition names a *population* (rows of one release table, optionally the first row per
episode, filtered by conditions) and a *numerator* (conditions on those rows). Conditions name
columns of the population's table: the form's own columns (`schemas.forms`), a few derived
variables, and the episode's intake (basis) columns joined onto the other tables. Everything is
checked against the data dictionary when the catalogue is loaded, so a definition that names an
unknown table, column or operator, or a value outside a column's code list, is refused before any
data is read.

Semantics of a condition on a missing value: it is false, except `is_null`. `any_of` is true when
at least one of its conditions is true.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    model_validator,
)

from schemas.forms import FORMS, PATIENT_KEY_COLUMN, PSEUDONYM_COLUMN, ColumnKind, Form

Op = Literal["eq", "ne", "in", "not_in", "is_null", "not_null", "lt", "le", "gt", "ge", "any_of"]
TableName = Literal["basis", "measurement", "discharge", "followup", "any"]

SCALAR_OPS: Final = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})
LIST_OPS: Final = frozenset({"in", "not_in"})
NULL_OPS: Final = frozenset({"is_null", "not_null"})
ORDERING_OPS: Final = frozenset({"lt", "le", "gt", "ge"})


@dataclass(frozen=True)
class Variable:
    """A column a definition may name: its kind and, for coded integers, the allowed codes."""

    name: str
    kind: ColumnKind
    codes: frozenset[int] | None = None
    minimum: int | None = None
    maximum: int | None = None
    description: str = ""


def _form_variables(form: Form) -> dict[str, Variable]:
    variables: dict[str, Variable] = {}
    for column in FORMS[form].columns:
        name = PATIENT_KEY_COLUMN if column.name == PSEUDONYM_COLUMN else column.name
        variables[name] = Variable(
            name,
            column.kind,
            column.codes.values if column.codes is not None else None,
            column.minimum,
            column.maximum,
            column.description,
        )
    return variables


# The episode's intake columns joined onto measurement, discharge, follow-up and `any` rows
# (the resident context needs home_hf_orgnr everywhere; age, sex and treatment type are the
# case-mix variables).
EPISODE_COLUMNS: Final = ("home_hf_orgnr", "age", "sex", "treatment_type")

# Derived variables per table, computed by the engine (indicators.engine builds each one).
DERIVED: Final[dict[str, dict[str, Variable]]] = {
    "basis": {
        "waiting_days": Variable(
            "waiting_days", "integer", minimum=0, description="intake_date − referral_date, days"
        ),
    },
    "measurement": {},
    "discharge": {},
    "followup": {
        "baseline_use_days_30": Variable(
            "baseline_use_days_30",
            "integer",
            minimum=0,
            maximum=30,
            description="use_days_30 at the episode's first measurement point",
        ),
        "use_days_change": Variable(
            "use_days_change",
            "integer",
            minimum=-30,
            maximum=30,
            description="follow-up use_days_30 − baseline_use_days_30 (negative: reduced use)",
        ),
    },
    "any": {
        "record_date": Variable(
            "record_date", "date", description="The date that places the record in its year"
        ),
    },
}

# Columns common to the four episode forms, plus clinical_study_id (null on forms without it):
# the `any` table is every record of every episode form, for patient-level indicators.
ANY_COLUMNS: Final = (
    "record_id",
    "episode_id",
    PATIENT_KEY_COLUMN,
    "provider_orgnr",
    "unit_code",
    "clinical_study_id",
)


def _table_variables() -> dict[str, dict[str, Variable]]:
    basis = _form_variables(Form.BASIS)
    tables: dict[str, dict[str, Variable]] = {"basis": {**basis, **DERIVED["basis"]}}
    for form in (Form.MEASUREMENT, Form.DISCHARGE, Form.FOLLOWUP):
        own = _form_variables(form)
        episode = {name: basis[name] for name in EPISODE_COLUMNS}
        tables[form.value] = {**own, **episode, **DERIVED[form.value]}
    tables["any"] = {
        **{name: basis[name] for name in ANY_COLUMNS},
        **{name: basis[name] for name in EPISODE_COLUMNS},
        **DERIVED["any"],
    }
    return tables


TABLE_VARIABLES: Final = _table_variables()

# The date that places a row in a year, per table (DOMAIN.md "Which year a record counts in").
YEAR_DATES: Final[dict[str, str]] = {
    "basis": "intake_date",
    "measurement": "measure_date",
    "discharge": "discharge_date",
    "followup": "followup_date",
    "any": "record_date",
}


def _toml_kind(value: Any) -> str:
    """What TOML wrote, in the words of a definition's author (for messages)."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return f"a decimal number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, datetime | date | time):
        return f"an unquoted TOML date or time ({value.isoformat()}; dates are strings here)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


_EXPECTED_VALUE: Final = "an integer, a string, or a list of integers or of strings"


def _plain_value(value: Any) -> Any:
    """Refuse, before pydantic sees it, a condition value no column can hold.

    The value is compared with codes, counts, text and dates as written, so nothing is converted:
    in lax mode `true` became the code 1 and `[1, "2"]` became `[1, 2]`. A boolean, a decimal
    number, a TOML date and a list mixing integers and strings are refused here with one message
    (a strict union alone would report one error per member of the union); whether an integer or
    a string fits the named column is `check_condition`'s question.
    """
    if value is None or (isinstance(value, int | str) and not isinstance(value, bool)):
        return value
    if not isinstance(value, list):
        raise ValueError(f"expected {_EXPECTED_VALUE}, not {_toml_kind(value)}")
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ValueError(
                f"expected a list of integers or of strings, but item {index} is {_toml_kind(item)}"
            )
    if len({type(item) for item in value}) > 1:
        raise ValueError(
            "expected a list of integers or of strings, not a list mixing integers and strings"
        )
    return value


Scalar = StrictInt | StrictStr
Value = Annotated[Scalar | list[StrictInt] | list[StrictStr] | None, BeforeValidator(_plain_value)]


class Condition(BaseModel):
    """One condition: `column op value`, or `any_of` a list of conditions.

    Strict: TOML's own types are taken as written, never converted (see `_plain_value`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    column: str | None = None
    op: Op
    value: Value = None
    any_of: list[Condition] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Condition:
        if self.op == "any_of":
            if not self.any_of:
                raise ValueError("op any_of needs a non-empty list `any_of`")
            if self.column is not None or self.value is not None:
                raise ValueError("op any_of takes neither `column` nor `value`")
            return self
        if self.any_of is not None:
            raise ValueError(f"`any_of` is only allowed with op any_of, not {self.op}")
        if self.column is None:
            raise ValueError(f"op {self.op} needs a `column`")
        if self.op in NULL_OPS and self.value is not None:
            raise ValueError(f"op {self.op} takes no `value`")
        if self.op in LIST_OPS and not (isinstance(self.value, list) and self.value):
            raise ValueError(f"op {self.op} needs a non-empty list `value`")
        if self.op in SCALAR_OPS and (self.value is None or isinstance(self.value, list)):
            raise ValueError(f"op {self.op} needs a single `value`")
        return self


def check_condition(condition: Condition, table: str, where: str) -> None:
    """Refuse a condition that names an unknown column or a value the column cannot hold.

    `where` is the field path used in the message (e.g. `numerator.where.0`).
    """
    if condition.op == "any_of":
        assert condition.any_of is not None
        for index, inner in enumerate(condition.any_of):
            check_condition(inner, table, f"{where}.any_of.{index}")
        return
    variables = TABLE_VARIABLES[table]
    assert condition.column is not None
    variable = variables.get(condition.column)
    if variable is None:
        raise ValueError(
            f"{where}.column: unknown column {condition.column!r} of table {table!r} "
            f"(known: {', '.join(sorted(variables))})"
        )
    if condition.op in ORDERING_OPS and variable.kind in ("text", "orgnr"):
        raise ValueError(
            f"{where}.op: {condition.op} is not defined on text column {variable.name}"
        )
    values: list[Any] = (
        []
        if condition.value is None
        else condition.value
        if isinstance(condition.value, list)
        else [condition.value]
    )
    for value in values:
        _check_value(variable, value, condition.op, f"{where}.value")


def _check_value(variable: Variable, value: Any, op: str, where: str) -> None:
    if variable.kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            codes = (
                ""
                if variable.codes is None
                else f" (codes: {', '.join(str(code) for code in sorted(variable.codes))})"
            )
            raise ValueError(
                f"{where}: column {variable.name} takes integers{codes}, not {_toml_kind(value)}"
            )
        if variable.codes is not None and value not in variable.codes:
            raise ValueError(
                f"{where}: {value} is not a code of column {variable.name} "
                f"(codes: {', '.join(str(code) for code in sorted(variable.codes))})"
            )
        # An ordering comparison just outside the range is meaningful (e.g. `lt 0`); equality
        # with an impossible value is a mistake.
        if op not in ORDERING_OPS and (
            (variable.minimum is not None and value < variable.minimum)
            or (variable.maximum is not None and value > variable.maximum)
        ):
            raise ValueError(f"{where}: {value} is outside the range of column {variable.name}")
    elif variable.kind == "date":
        if not isinstance(value, str):
            raise ValueError(
                f"{where}: column {variable.name} takes ISO dates as strings (yyyy-mm-dd), "
                f"not {_toml_kind(value)}"
            )
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{where}: not an ISO date (yyyy-mm-dd)") from None
    elif not isinstance(value, str):
        raise ValueError(
            f"{where}: column {variable.name} takes text (strings), not {_toml_kind(value)}"
        )


class Population(BaseModel):
    """The rows an indicator is computed over."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    table: TableName
    first_per_episode: str | None = Field(
        default=None,
        description="Keep only the episode's first row by this date column (ties: record_id); "
        "applied before `where`",
    )
    where: list[Condition] = Field(default_factory=list)


class Numerator(BaseModel):
    """The population rows that count in the numerator."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    where: list[Condition] = Field(min_length=1)
