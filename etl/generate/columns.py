"""A form's rows under construction: every column a numpy int64 array plus a null mask.

Integers are values, dates are days since 1970-01-01, text columns are indices into a vocabulary
(so that vectorised numpy does all the work and planting an error is an assignment), identifiers
are numbers formatted with a prefix only when the rows are written.
"""

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.forms import FORMS, Form

# Identifier prefixes. Ten digits after the prefix: never an 11-digit run (identity-number guard).
ID_PREFIX: Final[dict[str, str]] = {
    "basis": "B",
    "measurement": "M",
    "discharge": "D",
    "followup": "F",
    "optout": "O",
    "episode_id": "E",
}
ID_DIGITS: Final = 10
# Positions of the 16 hex digits of a pseudonym that carry a letter (g-v): no run of more than 3
# digits, so no pseudonym can ever look like an identity number.
_LETTER_POSITIONS: Final = (3, 7, 11, 15)
_HEX: Final = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_LETTERS: Final = np.frombuffer(b"ghijklmnopqrstuv", dtype=np.uint8)
_MASK64: Final = np.uint64(0xFFFFFFFFFFFFFFFF)


def fixed_width_strings(chars: np.ndarray) -> pa.StringArray:
    """An Arrow string array from an (n, width) uint8 array of ASCII characters."""
    n, width = chars.shape
    offsets = (np.arange(n + 1, dtype=np.int64) * width).astype(np.int32)
    data = np.ascontiguousarray(chars, dtype=np.uint8).tobytes()
    array = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    assert isinstance(array, pa.StringArray)
    return array


def _digits(values: np.ndarray, count: int) -> np.ndarray:
    """(n, count) ASCII decimal digits of non-negative `values`, zero-padded."""
    out = np.empty((values.size, count), dtype=np.uint8)
    rest = values.astype(np.int64).copy()
    for position in range(count - 1, -1, -1):
        out[:, position] = 48 + rest % 10
        rest //= 10
    return out


def format_ids(prefix: str, numbers: np.ndarray) -> pa.StringArray:
    """`prefix` + 10 zero-padded digits."""
    head = np.full((numbers.size, len(prefix)), np.frombuffer(prefix.encode(), dtype=np.uint8))
    return fixed_width_strings(np.hstack([head, _digits(numbers, ID_DIGITS)]))


def format_pseudonyms(patients: np.ndarray, key: int) -> pa.StringArray:
    """Opaque pseudonyms "P" + 16 characters: a keyed bijection of the patient number, so distinct
    patients always get distinct pseudonyms and the seed decides which."""
    with np.errstate(over="ignore"):
        x = patients.astype(np.uint64) + np.uint64(1)
        x = x * np.uint64(0x9E3779B97F4A7C15) + np.uint64(key & 0xFFFFFFFFFFFFFFFF)
        x ^= x >> np.uint64(29)
        x = (x * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x ^= x >> np.uint64(32)
    nibbles = np.empty((patients.size, 16), dtype=np.uint8)
    for position in range(16):
        nibbles[:, position] = ((x >> np.uint64(4 * (15 - position))) & np.uint64(15)).astype(
            np.uint8
        )
    chars = _HEX[nibbles]
    for position in _LETTER_POSITIONS:
        chars[:, position] = _LETTERS[nibbles[:, position]]
    head = np.full((patients.size, 1), ord("P"), dtype=np.uint8)
    return fixed_width_strings(np.hstack([head, chars]))


def format_dates(days: np.ndarray) -> pa.StringArray:
    """dd.mm.yyyy of days since 1970-01-01."""
    moments = days.astype("datetime64[D]")
    months = moments.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (moments - months.astype("datetime64[D]")).astype(np.int64) + 1
    dot = np.full((days.size, 1), ord("."), dtype=np.uint8)
    return fixed_width_strings(
        np.hstack([_digits(day, 2), dot, _digits(month, 2), dot, _digits(year, 4)])
    )


def _as_text(values: np.ndarray, render: "type[int] | None" = None) -> pa.Array:
    """Integers (or, with `render` None, days) as text: formatted once per distinct value in the
    chunk's range and taken, which is many times faster than casting every value."""
    if values.size == 0:
        return pa.array([], pa.string())
    low, high = int(values.min()), int(values.max())
    if high - low > 100_000:
        if render is None:
            return format_dates(values)
        return pc.cast(pa.array(values), pa.string())
    span = np.arange(low, high + 1)
    vocabulary = format_dates(span) if render is None else pa.array([str(v) for v in span.tolist()])
    return vocabulary.take(pa.array(values - low))


@dataclass
class Rows:
    """The rows of one form. `columns` in the form's column order; `texts` gives the vocabulary of
    text columns stored as indices; identifier columns are formatted from numbers."""

    form: Form
    columns: dict[str, np.ndarray]
    nulls: dict[str, np.ndarray]
    texts: dict[str, list[str]]
    # Values that cannot be represented in the column's type (planted type errors): column →
    # (row positions, raw text). Written only to CSV and XLSX.
    raw: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(next(iter(self.columns.values())).size)

    def null(self, column: str) -> np.ndarray:
        if column not in self.nulls:
            self.nulls[column] = np.zeros(len(self), dtype=bool)
        return self.nulls[column]

    def take(self, positions: np.ndarray) -> "Rows":
        """The rows at `positions` (ascending, repeats allowed: a repeated row keeps its raw
        values only in its first copy)."""
        assert positions.size == 0 or bool(np.all(np.diff(positions) >= 0))
        raw = {name: (np.searchsorted(positions, at), v) for name, (at, v) in self.raw.items()}
        return Rows(
            self.form,
            {name: values[positions] for name, values in self.columns.items()},
            {name: mask[positions] for name, mask in self.nulls.items()},
            self.texts,
            raw,
        )

    def arrow(self, column: str, pseudonym_key: int) -> pa.Array:
        """The typed Arrow array of one column (planted type errors are null here)."""
        values = self.columns[column]
        mask = self.nulls.get(column)
        spec = FORMS[self.form]
        kind = spec.column(column).kind if column in spec.column_names else "text"
        array: pa.Array
        if column == "record_id":
            array = format_ids(ID_PREFIX[self.form.value], values)
        elif column == "episode_id":
            array = format_ids(ID_PREFIX["episode_id"], values)
        elif column == "patient_pseudonym":
            array = format_pseudonyms(values, pseudonym_key)
        elif column in self.texts:
            array = pa.array(self.texts[column], pa.string()).take(pa.array(values))
        elif kind == "date":
            array = pa.array(values.astype("datetime64[D]"), pa.date32())
        else:
            array = pa.array(values.astype(np.int32), pa.int32())
        if mask is not None and mask.any():
            array = pc.if_else(pa.array(mask), pa.scalar(None, array.type), array)
        return array

    def table(self, pseudonym_key: int) -> pa.Table:
        """The typed table (dates as date32, integers as int32)."""
        names = list(self.columns)
        return pa.table({name: self.arrow(name, pseudonym_key) for name in names})

    def text_table(self, pseudonym_key: int) -> pa.Table:
        """Every column as text the way registration systems export: dd.mm.yyyy dates, integer
        codes, empty for missing, with the planted unparseable values in place."""
        out: dict[str, pa.Array] = {}
        for name in self.columns:
            array = self.arrow(name, pseudonym_key)
            if not pa.types.is_string(array.type):
                text = _as_text(self.columns[name], None if pa.types.is_date32(array.type) else int)
                mask = self.nulls.get(name)
                if mask is not None and mask.any():
                    text = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), text)
                array = text
            if name in self.raw:
                positions, values = self.raw[name]
                replace = np.zeros(len(self), dtype=bool)
                replace[positions] = True
                order = np.argsort(positions, kind="stable")
                array = pc.replace_with_mask(
                    array, pa.array(replace), pa.array([values[i] for i in order], pa.string())
                )
            out[name] = array
        return pa.table(out)
