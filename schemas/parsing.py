"""Parsing raw text columns to the types of a form (EXTRACT_SPEC.md, "File conventions").

A raw table (every column `pa.string()`, as `etl.read.read_extract` returns it) becomes the form's
typed table (`schemas.forms.extract_schema`). A value that is present but not parseable becomes null
and is marked in `Normalised.invalid`, so that the validation suites can report `{column}.type`
without ever seeing (or echoing) the value itself.

Everything is vectorised with `pyarrow.compute`: a regex decides which values have an accepted
shape, a cast or `strptime` converts them, and comparing the parsed year, month and day with the
digits of the text rejects impossible dates (31.02.2021, which `strptime` rolls over to 03.03).
Costly steps run only when a column needs them (a '+' sign, a cell long enough to hide a digit run
in leading zeros), so a clean column of 1M values takes a few passes of simple kernels.
"""

from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import RejectedInput
from schemas.forms import FORMS, ColumnSpec, Form, extract_schema

# EXTRACT_SPEC.md: dates are `dd.mm.yyyy` or `yyyy-mm-dd`, nothing else (no 1.2.2021, no times).
_NORWEGIAN_DATE: Final = r"^([0-9]{2})\.([0-9]{2})\.([0-9]{4})$"
_ISO_DATE: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# Each accepted shape, its strptime format, and where its year, month and day digits start.
_DATE_SHAPES: Final = (
    (_NORWEGIAN_DATE, "%d.%m.%Y", (6, 3, 0)),
    (_ISO_DATE, "%Y-%m-%d", (0, 5, 8)),
)
# An integer is an optional sign and ASCII digits ("1.0", "1 000", "1e3" are not integers).
_INTEGER: Final = r"^[+-]?[0-9]+$"
# int32 holds at most 10 digits; a longer digit run (after leading zeros) cannot fit.
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
# The longest text that is cast as it stands: a sign and 10 digits. A longer cell is an int32 only
# with leading zeros, which are trimmed first (only in a column that has such a cell).
_INTEGER_TEXT_MAX: Final = 11


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
    dates = pa.nulls(len(values), pa.date32())
    for pattern, format, (year_at, month_at, day_at) in _DATE_SHAPES:
        shaped = pc.match_substring_regex(values, pattern=pattern)
        if not pc.any(shaped).as_py():
            continue
        candidates = pc.if_else(shaped, values, pa.scalar(None, pa.string()))
        parsed = pc.strptime(candidates, format=format, unit="s", error_is_null=True)

        def digits(start: int, width: int, text: pa.Array = candidates) -> pa.Array:
            return pc.cast(pc.utf8_slice_codeunits(text, start, start + width), pa.int64())

        year = digits(year_at, 4)
        # strptime rolls 31.02 over to 03.03: keep only dates whose parts are the text's own.
        same = pc.and_(
            pc.and_(
                pc.equal(pc.year(parsed), year), pc.equal(pc.month(parsed), digits(month_at, 2))
            ),
            pc.equal(pc.day(parsed), digits(day_at, 2)),
        )
        # Year 0000 does not exist (Arrow would accept it, Python's calendar does not).
        valid = pc.fill_null(pc.and_(same, pc.not_equal(year, 0)), False)
        dates = pc.if_else(valid, pc.cast(parsed, pa.date32()), dates)
    return dates, _invalid(values, dates)


def parse_integers(values: pa.Array) -> tuple[pa.Array, pa.BooleanArray]:
    """Optional sign and digits → int32; anything else, or outside int32, is invalid."""
    values = _as_string(values)
    shaped = pc.match_substring_regex(values, pattern=_INTEGER)
    # Arrow's cast refuses a leading '+', and leading zeros would hide a too-long digit run.
    if pc.any(pc.starts_with(values, pattern="+")).as_py():
        values_unsigned = pc.replace_substring_regex(values, pattern=r"^\+", replacement="")
    else:
        values_unsigned = values
    longest = pc.max(pc.binary_length(values_unsigned)).as_py()
    if longest is None or longest <= _INTEGER_TEXT_MAX:
        # No cell is long enough to need trimming: every shaped cell fits an int64 cast as it is.
        trimmed, fits = values_unsigned, shaped
    else:
        trimmed = pc.replace_substring_regex(
            values_unsigned, pattern=r"^(-?)0+([0-9])", replacement=r"\1\2"
        )
        fits = pc.and_(shaped, pc.less_equal(pc.utf8_length(trimmed), _INTEGER_TEXT_MAX))
    if pc.all(fits).as_py():  # every present value (nulls skipped) casts: no masking copy
        candidates = trimmed
    else:
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
            bad = pa.array(np.zeros(raw.num_rows, dtype=np.bool_))
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
