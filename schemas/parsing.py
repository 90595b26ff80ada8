"""Parsing raw text columns to the types of a form (EXTRACT_SPEC.md, "File conventions").

A raw table (every column `pa.string()`, as `etl.read.read_extract` returns it) becomes the form's
typed table (`schemas.forms.extract_schema`). A value that is present but not parseable becomes null
and is marked in `Normalised.invalid`, so that the validation suites can report `{column}.type`
without ever seeing (or echoing) the value itself.

Everything is vectorised with `pyarrow.compute`: a regex decides which values have an accepted
shape, a cast or `strptime` converts them, and a round trip rejects impossible dates.
"""

from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import RejectedInput
from schemas.forms import FORMS, ColumnSpec, Form, extract_schema

# EXTRACT_SPEC.md: dates are `dd.mm.yyyy` or `yyyy-mm-dd`, nothing else (no 1.2.2021, no times).
_NORWEGIAN_DATE: Final = r"^([0-9]{2})\.([0-9]{2})\.([0-9]{4})$"
_ISO_DATE: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# An integer is an optional sign and ASCII digits ("1.0", "1 000", "1e3" are not integers).
_INTEGER: Final = r"^[+-]?[0-9]+$"
# int32 holds at most 10 digits; a longer digit run (after leading zeros) cannot fit.
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1


@dataclass(frozen=True)
class Normalised:
    """A form's typed table and, per column, where a present value could not be parsed."""

    table: pa.Table
    # Column → True where the raw value was present (non-null) but not parseable as the column's
    # kind. Text columns are never invalid here (patterns are the validation suites' concern).
    invalid: dict[str, pa.BooleanArray]


def parse_dates(values: pa.Array) -> tuple[pa.Array, pa.BooleanArray]:
    """`dd.mm.yyyy` or `yyyy-mm-dd` strings → date32; impossible dates (31.02.2021) are invalid."""
    values = _as_string(values)
    iso = pc.replace_substring_regex(values, pattern=_NORWEGIAN_DATE, replacement=r"\3-\2-\1")
    # Year 0000 does not exist (Arrow would accept it, Python's calendar does not).
    shaped = pc.and_(
        pc.match_substring_regex(iso, pattern=_ISO_DATE),
        pc.invert(pc.starts_with(iso, pattern="0000")),
    )
    candidates = pc.if_else(shaped, iso, pa.scalar(None, pa.string()))
    parsed = pc.strptime(candidates, format="%Y-%m-%d", unit="s", error_is_null=True)
    # strptime rolls 31.02 over to 03.03: keep only dates that format back to their own text.
    round_trip = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), candidates)
    dates = pc.if_else(round_trip, pc.cast(parsed, pa.date32()), pa.scalar(None, pa.date32()))
    return dates, _invalid(values, dates)


def parse_integers(values: pa.Array) -> tuple[pa.Array, pa.BooleanArray]:
    """Optional sign and digits → int32; anything else, or outside int32, is invalid."""
    values = _as_string(values)
    shaped = pc.match_substring_regex(values, pattern=_INTEGER)
    # Arrow's cast refuses a leading '+', and leading zeros would hide a too-long digit run.
    unsigned = pc.replace_substring_regex(values, pattern=r"^\+", replacement="")
    trimmed = pc.replace_substring_regex(unsigned, pattern=r"^(-?)0+([0-9])", replacement=r"\1\2")
    fits = pc.and_(shaped, pc.less_equal(pc.utf8_length(trimmed), 11))
    candidates = pc.if_else(fits, trimmed, pa.scalar(None, pa.string()))
    wide = pc.cast(candidates, pa.int64())
    in_range = pc.and_(pc.greater_equal(wide, _INT32_MIN), pc.less_equal(wide, _INT32_MAX))
    integers = pc.cast(pc.if_else(in_range, wide, pa.scalar(None, pa.int64())), pa.int32())
    return integers, _invalid(values, integers)


def normalise(raw: pa.Table, form: Form) -> Normalised:
    """Type a raw table as the form's extract schema.

    Columns of the form that the file lacks (optional ones; `read_extract` refuses a file without a
    required column) come out all null. A column the form does not know is refused: it may carry
    identifying data and must never reach the warehouse.
    """
    spec = FORMS[form]
    unknown = [name for name in raw.column_names if name not in spec.column_names]
    if unknown:
        raise RejectedInput(
            f"Column(s) not part of form '{form.value}': {', '.join(sorted(unknown))}"
        )
    schema = extract_schema(form)
    arrays: list[pa.Array] = []
    invalid: dict[str, pa.BooleanArray] = {}
    for column in spec.columns:
        if column.name in raw.column_names:
            typed, bad = _parse(raw.column(column.name).combine_chunks(), column)
        else:
            typed = pa.nulls(raw.num_rows, column.arrow_type)
            bad = pa.array([False] * raw.num_rows, pa.bool_())
        arrays.append(typed)
        invalid[column.name] = bad
    return Normalised(pa.Table.from_arrays(arrays, schema=schema), invalid)


def _parse(values: pa.Array, column: ColumnSpec) -> tuple[pa.Array, pa.BooleanArray]:
    if column.kind == "date":
        return parse_dates(values)
    if column.kind == "integer":
        return parse_integers(values)
    text = _as_string(values)
    return text, pc.and_(pc.is_valid(text), pc.is_null(text))


def _as_string(values: pa.Array) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type != pa.string():
        values = pc.cast(values, pa.string())
    return values


def _invalid(values: pa.Array, parsed: pa.Array) -> pa.BooleanArray:
    """Present in the raw column, null after parsing."""
    return pc.and_(pc.is_valid(values), pc.is_null(parsed))
