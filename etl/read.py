"""Reading an extract file (CSV, XLSX or Parquet) into a raw table (EXTRACT_SPEC.md).

The raw table has every column as `pa.string()`, names lower-cased and stripped, values stripped,
empty cells as null, columns in the file's order and rows that are entirely empty dropped
(spreadsheet exports end with them). Typing is `schemas.parsing.normalise`'s job.

A file the register cannot read exactly is refused whole with `RejectedInput`. The messages name the
column, the line number or the count, never a value from the file: a value may be a pseudonym or an
identity number. An unexpected column is named (EXTRACT_SPEC.md: "an error naming the column"), but
only from a header row that is evidently one (`_is_header`): in a file without its header row the
first record's values stand in the header, and such a file is refused as lacking its header, its
cells unnamed (a first row with some of the form's names is a header whose missing required
columns are named, its other cells counted: `_names_some_columns`). A header name that could
itself be a value (`_shown`) is named by position only.
"""

import csv
import hashlib
import io
import itertools
import json
import os
import re
import threading
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import cached_property
from pathlib import Path, PurePath
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from etl.privacy import NUMERIC_SOURCE, find_identity_numbers
from schemas.errors import PrivacyViolation, RejectedInput
from schemas.forms import FORMS, PSEUDONYM_COLUMN, READ_NOTES, Form

DEFAULT_MAX_BYTES: Final = 512 * 1024 * 1024
# Zip-bomb limits for XLSX, checked from the zip directory before openpyxl inflates anything. A real
# extract workbook compresses roughly 5-20x (sheet XML); 100x is far beyond that.
XLSX_MAX_UNCOMPRESSED: Final = 1024 * 1024 * 1024
XLSX_MAX_RATIO: Final = 100

# The note on a file whose pseudonyms were numbers (XLSX number cells, a Parquet number column):
# a number keeps no leading zero, and the pseudonym re-keyed without it is another patient's. An
# opt-out file of such pseudonyms erased no one, and said nothing.
NUMBER_PSEUDONYMS: Final = (
    "patient_pseudonym was read from numbers: a pseudonym written with leading zeros has lost "
    "them and is taken for another patient (an opt-out then erases no one); send the column as "
    "text"
)
_SUFFIXES: Final = {".csv": "csv", ".txt": "csv", ".xlsx": "xlsx", ".parquet": "parquet"}
_ZIP_MAGIC: Final = b"PK\x03\x04"
_PARQUET_MAGIC: Final = b"PAR1"
# The first bytes of compressed files someone may send as a .csv (gzip, bzip2, xz, zstd, 7-Zip).
_COMPRESSED_MAGIC: Final = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"7z\xbc\xaf": "7-Zip",
}
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_DELIMITERS: Final = (";", ",")
# A byte that `bytes.strip()` keeps: searched for instead of stripping a copy of the whole file.
_NOT_WHITESPACE: Final = re.compile(rb"[^ \t\n\r\x0b\x0c]")
# The bytes that Arrow's `utf8_trim_whitespace` strips from a value (its ASCII whitespace: tab to
# carriage return, the separators 0x1C-0x1F and space), but for the line breaks \n and \r: a file
# that is ASCII and has none of them has no value to strip. \n always ends a row; so does \r,
# unless inside quotes, where a value may hold it (checked apart, `_read_csv`).
_ASCII_BLANKS: Final = (b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f")
# Bytes that Windows-1252 leaves undefined: a file with them is not cp1252 (nor UTF-8).
_CP1252_UNDEFINED: Final = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")
# The non-ASCII characters a Norwegian or Sami extract plausibly holds: Latin-1 (æøå, é, á, the
# no-break space, °), the Sami letters beyond it (North Č č Đ đ Ŋ ŋ Š š Ŧ ŧ Ž ž, Lule Ń ń, Skolt
# Ǥ ǥ Ǧ ǧ Ǩ ǩ Ǯ ǯ Ʒ ʒ), combining diacritics (decomposed letters, as some exports write them), and
# punctuation (dashes, quotes, …, €, ™). Never taken for Windows-1252 bytes (see `_decode`).
_SAMI_LETTERS: Final = "ČčĐđŊŋŃńŠšŦŧŽžǤǥǦǧǨǩǮǯƷʒ"
PLAUSIBLE_CHARACTERS: Final = frozenset(
    [chr(code) for code in range(0xA0, 0x100)]
    + list(_SAMI_LETTERS)
    + [chr(code) for code in range(0x300, 0x370)]
    + [chr(code) for code in range(0x2000, 0x2070)]
    + ["€", "™"]
)
_ASCII: Final = bytes(range(0x80))
# Windows-1252 text is valid UTF-8 only by accident, and the one accident a Norwegian text has is a
# letter whose byte is a UTF-8 lead byte directly followed by signs, whose bytes are continuation
# bytes: 'Ø–' (D8 96) is the UTF-8 of U+0616, 'Æ°' of 'ư', 'Å’' of 'Œ', 'æ––' of a CJK ideograph.
# The letters: capitals Æ Ø Å É Ö Ü (two-byte leads) and æ å é á (three-byte leads); ø ö ü and
# the other lower-case letters from F5 up are no lead byte. The signs: those that follow a word.
# A sequence that is in UTF-8 a character of a Norwegian or Sami text is no accident ('Å' and a
# no-break space is the Sami 'Š': UTF-8).
_LEAD_LETTERS: Final = "ÆØÅÉÖÜæåéá"
_SIGNS_AFTER_A_WORD: Final = "–—‘’“”\xa0°€…•«»"


def _accidents() -> frozenset[bytes]:
    found: set[bytes] = set()
    for letter in _LEAD_LETTERS:
        for length in (1, 2):
            for signs in itertools.product(_SIGNS_AFTER_A_WORD, repeat=length):
                encoded = (letter + "".join(signs)).encode("cp1252")
                try:
                    character = encoded.decode("utf-8")
                except UnicodeDecodeError:
                    continue
                if character not in PLAUSIBLE_CHARACTERS:
                    found.add(encoded)
    return frozenset(found)


CP1252_ACCIDENTS: Final = _accidents()
# A well-formed UTF-8 sequence of two to four bytes (RFC 3629, no surrogates, no overlong forms).
_UTF8_SEQUENCE: Final = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
_ALL_COLUMNS: Final = frozenset(name for spec in FORMS.values() for name in spec.column_names)
# A name of an evidently real header is shown unless it could be a value itself: six digits or more
# (a birth date DDMMYY, an identity number in any layout, a phone number, an id), or longer than a
# column name plausibly is (a free text). The column names of the data dictionary have at most 17
# characters and no digit.
_SHOWN_NAME_MAX_LENGTH: Final = 64
_SHOWN_NAME_MAX_DIGITS: Final = 5


@dataclass(frozen=True)
class Received:
    """An extract received over the network, held in memory only: as sent, it holds source
    pseudonyms (and, until the guard has read it, whatever else), so it is never written to disk.
    `name` gives its kind by its suffix, as a file's name does."""

    name: str
    data: bytes = field(repr=False)  # never in a log or a traceback's locals

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# An extract: a file where it lies (`kvarus load`) or one received by the API.
Extract = Path | Received


def _opened(extract: Extract) -> Path | io.BytesIO:
    """What zipfile, openpyxl and pyarrow open: the file's path, or the bytes as a file."""
    return extract if isinstance(extract, Path) else io.BytesIO(extract.data)


def read_extract(path: Extract, form: Form, *, max_bytes: int = DEFAULT_MAX_BYTES) -> pa.Table:
    """The extract (a file at `path`, or one received) as a raw table of `form`;
    `RejectedInput` if it cannot be read."""
    if isinstance(path, Path) and not path.is_file():
        raise RejectedInput("The extract file does not exist")
    size = path.stat().st_size if isinstance(path, Path) else len(path.data)
    if size == 0:
        raise RejectedInput("The extract file is empty")
    if size > max_bytes:
        raise RejectedInput(f"The extract file is {size} bytes, over the limit of {max_bytes}")
    kind = _file_kind(path)
    notes: list[str] = []
    if kind == "xlsx":
        names, columns, numeric, notes = _read_xlsx(path, form)
    elif kind == "parquet":
        names, columns, numeric = _read_parquet(path, form)
    else:
        names, columns, blank_free = _read_csv(path, form)
        return _finish(names, columns, form, blank_free=blank_free)
    return _finish(names, columns, form, numeric=numeric, notes=notes)


def _file_kind(path: Extract) -> str:
    kind = _SUFFIXES.get(PurePath(path.name).suffix.lower())
    if kind is None:
        raise RejectedInput("Unknown file type: an extract must be .csv, .txt, .xlsx or .parquet")
    if isinstance(path, Received):
        head = path.data[:8]
    else:
        with path.open("rb") as file:
            head = file.read(8)
    magic = head[:4]
    if kind == "xlsx" and magic != _ZIP_MAGIC:
        raise RejectedInput("The .xlsx file is not an Excel workbook (no zip signature)")
    if kind == "parquet" and magic != _PARQUET_MAGIC:
        raise RejectedInput("The .parquet file is not a Parquet file (no PAR1 signature)")
    if kind == "csv" and magic in (_ZIP_MAGIC, _PARQUET_MAGIC):
        raise RejectedInput("The text file is a binary file (a workbook or Parquet file renamed)")
    if kind == "csv":
        for signature, name in _COMPRESSED_MAGIC.items():
            if head.startswith(signature):
                raise RejectedInput(
                    f"The text file is compressed ({name}): decompress it and send the CSV itself"
                )
    return kind


def _is_header(names: Sequence[str], form: Form) -> bool:
    """Whether the first row is evidently a header: every required column of `form` is in it, or
    most of its cells are column names of some form.

    A record alone cannot pass: its cells are a record's values, and no form's values are column
    names (a pseudonym or a unit code that happens to be one is a cell or two, never most of the
    row). A header and a record glued together can (a line break lost after the header): whether
    its unknown cells may be quoted is `_named`'s question.
    """
    present = set(names)
    if set(FORMS[form].required_columns) <= present:
        return True
    return 2 * sum(name in _ALL_COLUMNS for name in names) > len(names)


def _named(names: Sequence[str]) -> bool:
    """Whether the unknown cells of a header may be quoted as column names: at least half of its
    cells are column names. A header with a record glued to it (its last name merged with the
    record's first value) has fewer known cells than other cells, the record's values, which are
    then named by position only."""
    return 2 * sum(name in _ALL_COLUMNS for name in names) >= len(names)


def _shown(name: str) -> bool:
    """Whether a name of an evidently real header may be quoted (see `_SHOWN_NAME_MAX_LENGTH`)."""
    digits = sum(character.isdigit() for character in name)
    return len(name) <= _SHOWN_NAME_MAX_LENGTH and digits <= _SHOWN_NAME_MAX_DIGITS


def _display(name: str, position: int, named: bool) -> str:
    """How a cell of an evidently real header (`_is_header`) is named in a message: its name, or its
    position when the name could be a value (`_shown`) or the header a record's too (`_named`)."""
    if named and _shown(name):
        return f"'{name}'"
    return f"column {position} (name not shown: it could be a value)"


def _names_some_columns(names: Sequence[str], form: Form) -> bool:
    """Whether a first row that is no evident header (`_is_header`) is still a header, its other
    cells misnamed: at least two of the form's column names and a quarter of its cells.

    A record's value is a column name only by accident (a unit code 'sex'), and only a text value
    can be (a date, a number or an orgnr never is): one cell, not two and a quarter of the row.
    """
    known = len(set(names) & set(FORMS[form].column_names))
    return known >= 2 and 4 * known >= len(names)


def _check_header(names: Sequence[str], form: Form) -> None:
    spec = FORMS[form]
    if not _is_header(names, form):
        # Checked first: a record's cells are often blank or equal (duplicate "names").
        if _names_some_columns(names, form):
            # The required names are the form's own, safe to show; the other cells may be a
            # record's values (a header with a record glued to it), counted but never quoted.
            missing = [name for name in spec.required_columns if name not in names]
            others = sum(name not in spec.column_names for name in names)
            raise RejectedInput(
                f"The header of form '{form.value}' lacks the required column(s) "
                f"{', '.join(missing)}; {others} of its {len(names)} cells are not column names "
                "of the form (not shown: they could be values)"
            )
        raise RejectedInput(
            f"The first row is not a header of form '{form.value}' (too few of its cells are "
            "column names): was the header row left out? Its cells are not shown, as they may be "
            "a record's values"
        )
    named = _named(names)
    counts = Counter(names)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        shown = ", ".join(_display(name, names.index(name) + 1, named) for name in duplicates)
        raise RejectedInput(f"Duplicate column name(s) in the header: {shown}")
    for position, name in enumerate(names, start=1):
        if name == "":
            raise RejectedInput(f"Column {position} of the header has no name")
    unknown = [name for name in names if name not in spec.column_names]
    missing = [name for name in spec.required_columns if name not in counts]
    if not unknown and not missing:
        return
    other = _form_of(names, exclude=form)
    if other is not None:
        raise RejectedInput(
            f"The columns are those of form '{other.value}', not '{form.value}': "
            "was the file uploaded as the wrong form?"
        )
    if unknown:
        shown = ", ".join(_display(name, names.index(name) + 1, named) for name in unknown)
        # A misspelt column is both: say so, or the fix looks like dropping a column.
        lacking = f"; required column(s) missing: {', '.join(missing)}" if missing else ""
        raise RejectedInput(
            f"Column(s) not part of form '{form.value}': {shown}; an unexpected column may carry "
            f"identifying data, so the file is rejected whole{lacking}"
        )
    raise RejectedInput(f"Required column(s) of form '{form.value}' missing: {', '.join(missing)}")


def _form_of(names: Sequence[str], *, exclude: Form) -> Form | None:
    """The other form whose columns these are (all known, every required one present)."""
    present = set(names)
    for form, spec in FORMS.items():
        if form is exclude:
            continue
        if present <= set(spec.column_names) and set(spec.required_columns) <= present:
            return form
    return None


# --- CSV ------------------------------------------------------------------------------------------


def _decode(data: bytes) -> bytes:
    """The file's bytes as UTF-8 (without BOM): UTF-8 or Windows-1252 (EXTRACT_SPEC.md).

    - Valid UTF-8: UTF-8 (any script or sign: 'Tønsberg ≥18 år', 'Łódź', 'Studie-α', '✓'), but
      for Windows-1252 text that is valid UTF-8 by accident (`CP1252_ACCIDENTS`: 'Avd. Ø–2' is
      D8 96, U+0616). A file whose every non-ASCII character is such an accident is Windows-1252;
      one with an accident beside other non-ASCII characters is refused as mixed (UTF-8 'Blåbær'
      beside Windows-1252 'Ø–': either reading would store something false).
    - Not valid UTF-8: Windows-1252, unless a well-formed UTF-8 sequence that is no accident is in
      it (UTF-8 'æ' or '≥' beside Windows-1252 bytes: refused as mixed, not stored as 'Ã¦' or
      'â‰¥') or a byte that Windows-1252 leaves undefined (refused).
    What stays ambiguous: 'Å' followed by ƒ „ Š ‹ ¡ ¦ § ½ ¾ or the no-break space, 'Æ' by '·'
    (and a few pairs of a letter that is not Norwegian, Ä Ç Ê, and a sign) are the UTF-8 of Sami
    letters (Ń ń Ŋ ŋ š Ŧ ŧ Ž ž Š, Ʒ): in a file that is not UTF-8 they count as UTF-8 (the file is
    refused as mixed: saying so rather than guessing), in a file that is valid UTF-8 they are
    read as the Sami letters. And a character that is an accident's UTF-8 (among them 'Œ' 'œ' 'Ż'
    'ő' 'Ű' 'ū' 'ư' 'ƒ', Arabic, Hebrew, Syriac, some CJK) is read as Windows-1252 where it is
    the file's only kind of non-ASCII character, refused as mixed beside others.
    """
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if b"\x00" in data:
        raise RejectedInput(
            "Mixed or undecodable encoding: the file holds NUL bytes (UTF-16 or binary?); "
            "send UTF-8 or Windows-1252"
        )
    if data.isascii():
        # ASCII is UTF-8: skip building a str of the whole file (~50 ms and its size in memory).
        return data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return _windows_1252(data, data.count(b"\n", 0, error.start) + 1)
    # Valid UTF-8 stays valid without its ASCII bytes (never part of a multibyte character): the
    # set of its other characters costs a decode of those alone (1M basis rows: 0.1 s).
    characters = set(data.translate(None, _ASCII).decode("utf-8"))
    accidents = {c for c in characters if c.encode("utf-8") in CP1252_ACCIDENTS}
    if not accidents:
        return data
    if accidents == characters:
        # Every byte of an accident is defined in Windows-1252.
        return data.decode("cp1252").encode("utf-8")
    text = data.decode("utf-8")
    first = re.search("[" + "".join(map(re.escape, sorted(accidents))) + "]", text)
    assert first is not None
    raise RejectedInput(_mixed(text.count("\n", 0, first.start()) + 1))


def _mixed(line: int) -> str:
    return (
        f"Mixed or undecodable encoding: UTF-8 and other bytes mixed (first bad byte on line "
        f"{line}); send UTF-8 or Windows-1252"
    )


def _windows_1252(data: bytes, first_bad_line: int) -> bytes:
    """A file that is not valid UTF-8, as UTF-8 from Windows-1252 (see `_decode`)."""
    for sequence in _UTF8_SEQUENCE.finditer(data):
        if sequence.group() not in CP1252_ACCIDENTS:
            raise RejectedInput(_mixed(first_bad_line))
    undefined = _CP1252_UNDEFINED.search(data)
    if undefined is not None:
        line = data.count(b"\n", 0, undefined.start()) + 1
        raise RejectedInput(
            f"Mixed or undecodable encoding: a byte undefined in Windows-1252 on line {line}; "
            "send UTF-8 or Windows-1252"
        )
    return data.decode("cp1252").encode("utf-8")


def _detect_delimiter(header: str) -> tuple[str, list[str]]:
    """The delimiter under which the header has the most known column names.

    Not a majority of known names: a header with several unexpected columns (an npr_counts file of
    three columns and three extra) must get the error that names them (`_check_header`), not this
    one. At least two fields (no form has fewer than three) and one known name: a header that has
    none under either delimiter gives no evidence, nor does a tie.
    """
    known_names: dict[str, tuple[int, list[str]]] = {}
    for delimiter in _DELIMITERS:
        try:
            fields = next(csv.reader([header], delimiter=delimiter, quotechar='"'), [])
        except csv.Error:
            fields = []
        names = [field.strip().lower() for field in fields]
        known = sum(name in _ALL_COLUMNS for name in names)
        if len(names) >= 2 and known >= 1:
            known_names[delimiter] = (known, names)
    best = max((known for known, _ in known_names.values()), default=0)
    chosen = [delimiter for delimiter, (known, _) in known_names.items() if known == best]
    if not chosen:
        # Most likely a file without its header row (or with another delimiter): "undetectable
        # delimiter" sent the user looking at the separators.
        raise RejectedInput(
            "The first row holds no column name separated by ';' or ',': was the header row "
            "left out, or another delimiter used? Its cells are not shown, as they may be a "
            "record's values"
        )
    if len(chosen) != 1:
        raise RejectedInput(
            "Undetectable delimiter: the first row must be the column names, separated by "
            "';' or ','"
        )
    return chosen[0], known_names[chosen[0]][1]


class _RaggedRows:
    """pyarrow `invalid_row_handler`: counts rows with the wrong number of fields, skips them.
    A line of spaces and tabs alone is skipped uncounted: it is an empty line, as Arrow takes a
    line with nothing on it (an editor or an export leaves them at the end).

    It never keeps the row's text (a record), only its number.
    """

    def __init__(self) -> None:
        self.count = 0
        self.first_line: int | None = None

    def __call__(self, row: Any) -> str:
        if row.text is not None and not row.text.strip(" \t"):
            return "skip"
        self.count += 1
        if row.number is not None and (self.first_line is None or row.number < self.first_line):
            self.first_line = row.number
        return "skip"


def _file_line(data: bytes, row_number: int) -> int:
    """The file's line number of Arrow's row number, which does not count empty lines."""
    seen = 0
    for line, match in enumerate(re.finditer(rb"[^\r\n]*(?:\r\n|\r|\n|$)", data), start=1):
        if match.group().rstrip(b"\r\n"):
            seen += 1
            if seen == row_number:
                return line
    return row_number


def _read_csv(path: Extract, form: Form) -> tuple[list[str], list[pa.ChunkedArray], bool]:
    """The header's names, the columns as text, and whether no value can have a blank to strip
    (see `_finish`)."""
    data = _decode(path.read_bytes() if isinstance(path, Path) else path.data)
    # The header ends at the first line break of any convention (\n, \r\n, or a lone \r).
    breaks = [index for index in (data.find(b"\n"), data.find(b"\r")) if index >= 0]
    end = min(breaks) if breaks else -1
    header = (data if end < 0 else data[:end]).decode("utf-8")
    delimiter, names = _detect_delimiter(header)
    _check_header(names, form)
    if end < 0 or _NOT_WHITESPACE.search(data, end + 1) is None:
        raise RejectedInput("The extract file has a header but no data rows")

    def parse(use_threads: bool) -> tuple[pa.Table, _RaggedRows]:
        ragged = _RaggedRows()
        try:
            table = pacsv.read_csv(
                pa.py_buffer(data),
                read_options=pacsv.ReadOptions(
                    column_names=names, skip_rows=1, use_threads=use_threads
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter,
                    quote_char='"',
                    double_quote=True,
                    newlines_in_values=False,
                    invalid_row_handler=ragged,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                    null_values=[""],
                ),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError):
            # Arrow's message quotes the offending row: never pass it on.
            raise RejectedInput(
                "Malformed CSV: the file cannot be parsed (unbalanced quotes or broken rows)"
            ) from None
        return table, ragged

    table, ragged = parse(use_threads=True)
    if ragged.count:
        if ragged.first_line is None:
            # Row numbers are only known to a single-threaded read; re-read to name the line.
            _, ragged = parse(use_threads=False)
        where = ""
        if ragged.first_line is not None:
            where = f", the first on line {_file_line(data, ragged.first_line)}"
        raise RejectedInput(
            f"{ragged.count} row(s) with the wrong number of fields (truncated or ragged; "
            f"the header has {len(names)}){where}"
        )
    blank_free = (
        data.isascii()
        and not any(blank in data for blank in _ASCII_BLANKS)
        and (b"\r" not in data or b'"' not in data)  # no value can hold a \r without quotes
    )
    return names, table.columns, blank_free


# --- XLSX -----------------------------------------------------------------------------------------


def _check_zip(path: Extract) -> None:
    try:
        with zipfile.ZipFile(_opened(path)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        raise RejectedInput("The .xlsx file is not a readable workbook (broken zip)") from None
    uncompressed = sum(member.file_size for member in members)
    compressed = sum(member.compress_size for member in members)
    if uncompressed > XLSX_MAX_UNCOMPRESSED:
        raise RejectedInput(
            f"The workbook inflates to {uncompressed} bytes, over the limit of "
            f"{XLSX_MAX_UNCOMPRESSED}"
        )
    if uncompressed > XLSX_MAX_RATIO * max(compressed, 1):
        raise RejectedInput(
            f"The workbook's compression ratio is over {XLSX_MAX_RATIO}: refused as a zip bomb"
        )


def _cell_text(value: object) -> str | None:
    """A spreadsheet cell as the text a CSV export would hold."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.time() == time(0, 0):
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _other_sheets_with_data(
    sheets: Sequence[Any], opened: list[Any], order: list[str]
) -> list[str]:
    """A note for each sheet after the first that holds a value (EXTRACT_SPEC.md: "XLSX: first
    sheet"): the extract is read from the first sheet alone, and a value elsewhere may be data the
    user meant to send, so they are told which sheet was left unread.

    The note names the sheet by its position alone (a title is free text the exporter chose, a
    patient's name as well), never a value. Empty sheets (Excel's old default Ark2/Ark3, an unused
    notes sheet) get no note; a blank text counts as empty, as in the extract itself. Every value
    of the other sheets still goes through the privacy guard's detector: a file in which any value
    looks like an identity number is rejected whole (EXTRACT_SPEC.md), whichever sheet holds it.
    `opened` collects the row iterators to close.
    """
    notes: list[str] = []
    for sheet in sheets:
        sheet.reset_dimensions()  # as for the first sheet (`_read_xlsx`): a stale tag hides rows
        rows = sheet.iter_rows(values_only=True)
        opened.append(rows)
        texts: list[str | None] = []
        numbers: list[str | None] = []
        for row in rows:
            if row.count(None) == len(row):  # in C: a wide row of empty styled cells is fast
                continue
            for cell in row:
                text = _cell_text(cell) if cell is not None else None
                if text is not None and text.strip():
                    (numbers if _is_number(cell) else texts).append(text)
        if not texts and not numbers:
            continue
        position = order.index(sheet.title) + 1
        # A column of the text cells and one of the number cells (marked: the detector gives
        # them back a lost leading zero), padded with nulls to one length.
        width = max(len(texts), len(numbers))
        cells = pa.Table.from_arrays(
            [pa.array(v + [None] * (width - len(v)), pa.string()) for v in (texts, numbers)],
            schema=pa.schema(
                [("text", pa.string()), ("number", pa.string(), True, NUMERIC_SOURCE)]
            ),
        )
        found = sum(find_identity_numbers(cells).values())
        if found:
            raise PrivacyViolation(
                f"Sheet {position} of the workbook holds {found} value(s) that look like national "
                "identity numbers; the file is rejected whole"
            )
        notes.append(
            f"Sheet {position} of the workbook holds data and was not read: an extract "
            "is read from the first sheet only"
        )
    return notes


# openpyxl's warning for a date-formatted cell whose number is no date: it quotes the number (an
# identity number, say) and replaces the cell with "#VALUE!", out of the privacy guard's sight.
_DATE_OVERFLOW: Final = re.compile(
    r"Cell (?P<cell>[A-Z]+[0-9]+) is marked as a date but the serial value (?P<value>\S+) is "
    r"outside the limits"
)
# `warnings.catch_warnings` changes the process's filters: one workbook read at a time records
# them (the API reads uploads in threads), and outside a read openpyxl's warnings are never
# printed (their text may quote a cell's value).
_WARNINGS_LOCK: Final = threading.Lock()
warnings.filterwarnings("ignore", module=r"openpyxl(\.|$)")


def _read_xlsx(path: Extract, form: Form) -> tuple[list[str], list[pa.Array], set[int], list[str]]:
    """Names (a header of `form`), text columns, the positions (0-based) of columns with a number
    cell, and the notes on other sheets that hold data (`_other_sheets_with_data`).

    openpyxl's warnings are recorded, never shown; a date-formatted cell whose number is no date
    (which openpyxl replaces with "#VALUE!") goes through the privacy guard's detector by the
    number the warning names, as a number cell: an identity number there rejects the workbook
    whole, naming the cell."""
    _check_zip(path)
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = _read_workbook(path, form)
    overflowed = [
        found for w in caught if (found := _DATE_OVERFLOW.match(str(w.message))) is not None
    ]
    numbers = [_cell_text(_number(m.group("value"))) for m in overflowed]
    cells = pa.table(
        {"number": pa.array(numbers, pa.string())},
        schema=pa.schema([("number", pa.string(), True, NUMERIC_SOURCE)]),
    )
    if sum(find_identity_numbers(cells).values()):
        where = ", ".join(m.group("cell") for m in overflowed)
        raise PrivacyViolation(
            f"A date cell of the workbook ({where}) holds a number that looks like a national "
            "identity number; the file is rejected whole"
        )
    return read


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _read_workbook(
    path: Extract, form: Form
) -> tuple[list[str], list[pa.Array], set[int], list[str]]:
    """`_read_xlsx` without its warnings' check."""
    # Imported here: openpyxl is slow to import and only needed for workbooks.
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(_opened(path), read_only=True, data_only=True)
    except Exception:  # openpyxl raises many kinds on a broken workbook; none may leak a value.
        raise RejectedInput("The .xlsx file is not a readable workbook") from None
    opened: list[Any] = []
    try:
        sheets = workbook.worksheets
        if not sheets or sheets[0].title != workbook.sheetnames[0]:
            raise RejectedInput("The workbook's first sheet is not a sheet of cells (a chart?)")
        try:
            names, columns, numeric = _read_first_sheet(sheets[0], form, opened)
        except RejectedInput as error:
            # The extract may be on another sheet (a cover sheet first): say where data is.
            notes = _other_sheets_with_data(sheets[1:], opened, workbook.sheetnames)
            if not notes:
                raise
            raise RejectedInput(". ".join([error.detail, *notes])) from None
        notes = _other_sheets_with_data(sheets[1:], opened, workbook.sheetnames)
    except (ValueError, IndexError, KeyError, TypeError):
        # A cell openpyxl cannot parse (`<v>abc</v>` in a number cell, a shared string that does
        # not exist, a `t="d"` cell that is no date): the file, not the service, is at fault.
        # The message may quote the cell's text: not shown.
        raise RejectedInput(
            "The .xlsx file is not a readable workbook (a cell it cannot read)"
        ) from None
    finally:
        for rows_iterator in opened:
            rows_iterator.close()
        workbook.close()
    return names, columns, numeric, notes


def _read_first_sheet(
    sheet: Any, form: Form, opened: list[Any]
) -> tuple[list[str], list[pa.Array], set[int]]:
    """The extract on the workbook's first sheet (see `_read_xlsx`)."""
    # Read-only openpyxl reads only the range of the sheet's <dimension> tag, which some writers
    # leave stale: rows and columns beyond it were lost without a word. Every row is read.
    sheet.reset_dimensions()
    rows = sheet.iter_rows(values_only=True)
    # Closed by the caller (`opened`): a half-read sheet otherwise keeps its file open.
    opened.append(rows)
    header_cells = list(next(rows, ()))
    while header_cells and header_cells[-1] is None:
        header_cells.pop()
    if not header_cells:
        raise RejectedInput("The workbook's first row (the header) is empty")
    names = [(_cell_text(cell) or "").strip().lower() for cell in header_cells]
    _check_header(names, form)
    width = len(names)
    columns: list[list[str | None]] = [[] for _ in names]
    numeric: set[int] = set()
    for line, row in enumerate(rows, start=2):
        cells = [_cell_text(cell) for cell in row[:width]]
        numeric.update(i for i, cell in enumerate(row[:width]) if _is_number(cell))
        # A row spans every column up to the sheet's last (16,384 for a styled cell in XFD):
        # past the header, only cells that are not None are looked at (`count` runs in C).
        beyond = row[width:]
        if beyond.count(None) != len(beyond) and any(
            (_cell_text(cell) or "").strip() for cell in beyond if cell is not None
        ):
            raise RejectedInput(
                f"Row {line} of the workbook has values beyond the header's {width} columns"
            )
        cells = (cells + [None] * width)[:width]
        for column, cell in zip(columns, cells, strict=True):
            column.append(cell)
    return names, [pa.array(column, pa.string()) for column in columns], numeric


# --- Parquet --------------------------------------------------------------------------------------


def _parquet_text(values: pa.Array) -> pa.Array:
    """A Parquet column as text: dates ISO `yyyy-mm-dd`, integers as decimal text.

    A timestamp (any unit: pandas writes `timestamp[ns]` or `[us]`, Spark `[us]` or INT96, read
    as `[ns]`) is a date when it is exactly midnight, to the unit's last digit: it becomes
    `yyyy-mm-dd`. With a time zone, midnight is in the column's own zone (the wall-clock date
    the exporter wrote: 2021-03-01 00:00 Europe/Oslo, stored as 2021-02-28 23:00 UTC, is
    2021-03-01). Any other time of day stays `yyyy-mm-ddTHH:MM:SS[.fraction]`, which the form's
    date check refuses as not a date: a moment is not a date, and its date would be a guess."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        values = values.dictionary_decode()
        kind = values.type
    if pa.types.is_date(kind):
        return pc.strftime(values, format="%Y-%m-%d")
    if pa.types.is_timestamp(kind):
        if kind.tz is not None:
            values = pc.local_timestamp(values)
        # Midnight by value, not by text: strftime's `%S` prints the fraction of a sub-second
        # unit (`00:00:00.000000000`).
        start = pc.floor_temporal(values, unit="day")
        day = pc.strftime(start, format="%Y-%m-%d")
        moment = pc.strftime(values, format="%Y-%m-%dT%H:%M:%S")
        return pc.if_else(pc.equal(values, start), day, moment)
    if pa.types.is_boolean(kind):
        return pc.cast(pc.cast(values, pa.int8()), pa.string())
    if pa.types.is_floating(kind):
        # NaN is how pandas and numpy write a missing number (a float column with a gap): null, not
        # the text "nan" that the form's check would refuse as not a number.
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, kind), values)
        # Whole numbers within int64 become integer text; the rest (2.5, an infinity, 1e+20) stay
        # as their text, which the form's check refuses in that row alone. Cast to int64, an
        # infinity or 1e+20 raised and the whole file was refused as an unreadable column type.
        whole = pc.and_(pc.less(pc.abs(values), float(2**63)), pc.equal(values, pc.trunc(values)))
        as_int = pc.cast(pc.cast(pc.if_else(whole, values, None), pa.int64()), pa.string())
        return pc.if_else(whole, as_int, pc.cast(values, pa.string()))
    return pc.cast(values, pa.string())


def _read_parquet(path: Extract, form: Form) -> tuple[list[str], list[pa.Array], set[int]]:
    """Names (a header of `form`), text columns and the positions (0-based) of integer or floating
    columns."""
    try:
        table = pq.read_table(path if isinstance(path, Path) else pa.BufferReader(path.data))
    except (pa.ArrowException, OSError):
        raise RejectedInput("The .parquet file is not a readable Parquet file") from None
    names = [name.strip().lower() for name in table.column_names]
    # Before the columns: a column that cannot be read is then a column of the form, named below.
    _check_header(names, form)
    numeric = {i for i, field in enumerate(table.schema) if _numeric_type(field.type)}
    columns: list[pa.Array] = []
    for position, name in enumerate(names, start=1):
        try:
            columns.append(_parquet_text(table.column(position - 1).combine_chunks()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise RejectedInput(
                f"Column {_display(name, position, True)} of the Parquet file has a type that "
                "cannot be read as text"
            ) from None
    return names, columns, numeric


def _numeric_type(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


# --- common ---------------------------------------------------------------------------------------


def _clean(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A column as stripped text, an empty value as null.

    Chunks stay as the CSV reader made them: combining them copied the file's text (0.3 s for 1M
    rows).
    """
    if values.type != pa.string():
        values = pc.cast(values, pa.string())
    stripped = pc.utf8_trim_whitespace(values)
    empty = pc.equal(stripped, "")
    # if_else copies the whole column: only pay for it where a blank cell exists.
    if pc.any(empty).as_py():
        stripped = pc.if_else(empty, pa.scalar(None, pa.string()), stripped)
    return stripped


def _finish(
    names: list[str],
    columns: Sequence[pa.Array | pa.ChunkedArray],
    form: Form,
    *,
    numeric: set[int] | None = None,
    blank_free: bool = False,
    notes: Sequence[str] = (),
) -> pa.Table:
    """Strip values, empty → null, drop rows that are empty throughout, refuse an empty result.

    The columns at the positions in `numeric` were numbers in the source: their fields carry
    `etl.privacy.NUMERIC_SOURCE`, so the privacy guard restores the leading zero a number drops.
    `blank_free`: the columns are text with nothing to strip and no empty value (a CSV read whose
    empty values are already null): they are taken as they are (1M basis rows: 0.19 s saved).
    `notes` (for the user; never a value of the file) go in the schema's metadata under
    `READ_NOTES`, from where the validation report takes them; pseudonyms read from numbers get
    one too (`NUMBER_PSEUDONYMS`).
    """
    if blank_free:
        cleaned = list(columns)
    else:
        # Arrow's kernels release the GIL: the columns are cleaned on every core (1M basis rows:
        # 0.24 s → 0.13 s on 2 cores).
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            cleaned = list(pool.map(_clean, columns))
    marked = numeric or set()
    if any(names[i] == PSEUDONYM_COLUMN for i in marked):
        notes = [*notes, NUMBER_PSEUDONYMS]
    schema = pa.schema(
        [
            pa.field(name, pa.string(), metadata=NUMERIC_SOURCE if i in marked else None)
            for i, name in enumerate(names)
        ]
    )
    table = pa.Table.from_arrays(cleaned, schema=schema)
    if table.num_rows:
        any_value = pc.is_valid(cleaned[0])
        for values in cleaned[1:]:
            any_value = pc.or_(any_value, pc.is_valid(values))
        # filter copies every column: only when a row is empty throughout.
        if not pc.all(any_value).as_py():
            table = table.filter(any_value)
    if table.num_rows == 0:
        empty = f"The extract file of form '{form.value}' has no data rows"
        raise RejectedInput(". ".join([empty, *notes]))
    if notes:
        table = table.replace_schema_metadata({READ_NOTES: json.dumps(list(notes)).encode()})
    return table
