"""Append-only writers of extract files in the registration systems' conventions (EXTRACT_SPEC.md).

- CSV: `;` delimiter, `dd.mm.yyyy` dates, integer codes, empty cell for missing. basis and
  discharge in Windows-1252 with CRLF line ends (as Windows registration systems export), the other
  files UTF-8 with a byte-order mark and LF.
- XLSX: one sheet, header in row 1, written in openpyxl's write-only mode; integers as numbers,
  dates as `dd.mm.yyyy` text. The zip is rewritten with fixed timestamps so that the same seed gives
  the same bytes.
- Parquet: the form's types (dates as date32, integers as int32), no column statistics (a min/max
  statistic would be a record value in the file's metadata).
"""

import re
import shutil
import zipfile
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from openpyxl import Workbook

from etl.generate.columns import Rows, format_dates
from schemas.errors import KvarusError
from schemas.forms import FORMS, Form

FileFormat = Literal["csv", "xlsx", "parquet"]

CP1252_FORMS: Final = frozenset({Form.BASIS, Form.DISCHARGE})
# The most rows an XLSX sheet holds (1,048,576) less the header row.
XLSX_MAX_ROWS: Final = 1_048_575
# The fixed moment stamped into XLSX files (the zip's own timestamps cannot go before 1980).
_ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)


class GenerationError(KvarusError):
    """The register asked for cannot be written (e.g. more rows than an XLSX sheet holds)."""

    status = 422
    title = "Cannot generate"
    type_slug = "cannot-generate"


class FormWriter(ABC):
    def __init__(self, path: Path, form: Form, columns: tuple[str, ...], key: int) -> None:
        self.path = path
        self.form = form
        self.columns = columns
        self.key = key
        self.rows = 0

    def write(self, rows: Rows) -> None:
        assert tuple(rows.columns) == self.columns, "columns out of order"
        if len(rows):
            self._write(rows)
            self.rows += len(rows)

    @abstractmethod
    def _write(self, rows: Rows) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class CsvWriter(FormWriter):
    def __init__(self, path: Path, form: Form, columns: tuple[str, ...], key: int) -> None:
        super().__init__(path, form, columns, key)
        self.encoding = "cp1252" if form in CP1252_FORMS else "utf-8"
        self.newline = "\r\n" if form in CP1252_FORMS else "\n"
        self.file = path.open("wb")
        bom = b"" if form in CP1252_FORMS else b"\xef\xbb\xbf"
        self.file.write(bom + (";".join(columns) + self.newline).encode(self.encoding))

    def _write(self, rows: Rows) -> None:
        table = rows.text_table(self.key)
        cells = [pc.fill_null(column, "") for column in table.columns]
        lines = pc.binary_join_element_wise(*cells, ";")
        # No value may hold the delimiter, a quote or a line break: the text is written unquoted.
        separators = pc.count_substring(lines, ";")
        if (
            pc.any(pc.not_equal(separators, len(cells) - 1)).as_py()
            or pc.any(pc.match_substring_regex(lines, '["\r\n]')).as_py()
        ):
            raise AssertionError("a generated value would need CSV quoting")
        lines = pc.binary_join_element_wise(lines, pa.scalar(""), self.newline)
        self.file.write(_concatenated(lines).decode("utf-8").encode(self.encoding))

    def close(self) -> None:
        self.file.close()


def _concatenated(strings: pa.Array) -> bytes:
    """The bytes of all values of a string array, back to back."""
    array = strings.combine_chunks() if isinstance(strings, pa.ChunkedArray) else strings
    offsets = np.frombuffer(
        array.buffers()[1], dtype=np.int32, count=len(array) + 1, offset=array.offset * 4
    )
    data = array.buffers()[2]
    whole: bytes = data.to_pybytes()
    return whole[int(offsets[0]) : int(offsets[-1])]


class XlsxWriter(FormWriter):
    def __init__(
        self, path: Path, form: Form, columns: tuple[str, ...], key: int, stamp: datetime
    ) -> None:
        super().__init__(path, form, columns, key)
        self.stamp = stamp
        self.book = Workbook(write_only=True)
        self.book.properties.creator = "kvarus generate"
        self.book.properties.created = stamp
        self.sheet = self.book.create_sheet(form.value)
        self.sheet.append(list(columns))

    def _write(self, rows: Rows) -> None:
        if self.rows + len(rows) > XLSX_MAX_ROWS:
            raise GenerationError(
                f"the {self.form.value} sheet would exceed {XLSX_MAX_ROWS} rows; "
                "generate fewer episodes or choose csv or parquet"
            )
        table = rows.table(self.key)
        cells: list[list[object]] = []
        for name, column in zip(table.column_names, table.columns, strict=True):
            if pa.types.is_date32(column.type):
                text = format_dates(rows.columns[name])
                values: list[object] = pc.if_else(
                    pc.is_null(column), pa.scalar(None, pa.string()), text
                ).to_pylist()
            else:
                values = column.to_pylist()
            if name in rows.raw:
                for at, raw in zip(*rows.raw[name], strict=True):
                    values[int(at)] = raw
            cells.append(values)
        for row in zip(*cells, strict=True):
            self.sheet.append(list(row))

    def close(self) -> None:
        temporary = self.path.with_suffix(".tmp.xlsx")
        self.book.save(temporary)
        _rewrite_deterministic(temporary, self.path, self.stamp)
        temporary.unlink()


def _rewrite_deterministic(source: Path, target: Path, stamp: datetime) -> None:
    """Copy an XLSX zip with fixed entry timestamps and a fixed `modified` property (openpyxl
    stamps both with the wall clock when it saves)."""
    moment = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for entry in old.infolist():
            info = zipfile.ZipInfo(entry.filename, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = entry.external_attr
            if entry.filename == "docProps/core.xml":
                text = old.read(entry).decode("utf-8")
                pattern = r"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)"
                text = re.sub(pattern, rf"\g<1>{moment}\2", text)
                new.writestr(info, text.encode("utf-8"))
                continue
            with old.open(entry) as reader, new.open(info, "w") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)


class ParquetWriter(FormWriter):
    def __init__(
        self, path: Path, form: Form, columns: tuple[str, ...], key: int, schema: pa.Schema
    ) -> None:
        super().__init__(path, form, columns, key)
        self.schema = schema
        self.writer = pq.ParquetWriter(
            path, schema, compression="zstd", write_statistics=False, use_dictionary=True
        )

    def _write(self, rows: Rows) -> None:
        assert not rows.raw, "Parquet cannot carry values of the wrong type"
        self.writer.write_table(rows.table(self.key).cast(self.schema))

    def close(self) -> None:
        self.writer.close()


def typed_schema(form: Form, columns: tuple[str, ...]) -> pa.Schema:
    """The form's Arrow types, every field nullable (planted missing values); extra columns text."""
    spec = FORMS[form]
    known = set(spec.column_names)
    return pa.schema(
        [
            pa.field(name, spec.column(name).arrow_type if name in known else pa.string())
            for name in columns
        ]
    )


def open_writer(
    directory: Path,
    name: str,
    form: Form,
    columns: tuple[str, ...],
    file_format: FileFormat,
    *,
    key: int,
    stamp: datetime,
) -> FormWriter:
    path = directory / f"{name}.{file_format}"
    if file_format == "csv":
        return CsvWriter(path, form, columns, key)
    if file_format == "xlsx":
        return XlsxWriter(path, form, columns, key, stamp)
    return ParquetWriter(path, form, columns, key, typed_schema(form, columns))
