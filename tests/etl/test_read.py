"""etl.read.read_extract: every file convention of EXTRACT_SPEC.md, and every refusal.

Every refusal test puts SENTINEL (a stand-in for a pseudonym) into the file and asserts that the
message names the column / line / count but never carries SENTINEL.
"""

import bz2
import gzip
import json
import lzma
import zipfile
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import etl.read
from etl.privacy import find_identity_numbers, guard, is_identity_number
from etl.read import read_extract
from schemas.errors import PrivacyViolation, RejectedInput
from schemas.forms import FORMS, READ_NOTES, Form
from schemas.parsing import normalise

SENTINEL = "PSEUDO-SENTINEL-4711"
BASIS = list(FORMS[Form.BASIS].column_names)


def basis_row(**overrides: str) -> dict[str, str]:
    row = {
        "record_id": "r1",
        "episode_id": "e1",
        "patient_pseudonym": SENTINEL,
        "provider_orgnr": "983974880",
        "unit_code": "U1",
        "intake_date": "01.03.2021",
        "referral_date": "2021-02-15",
        "age": "35",
        "sex": "2",
        "home_hf_orgnr": "",
        "treatment_type": "1",
        "primary_substance": "1",
        "icd10": "F10.2",
        "audit": "12",
        "dudit": "",
        "housing": "1",
        "employment": "9",
        "injecting_6m": "0",
        "severity": "3",
        "research_consent": "1",
        "clinical_study_id": "",
    }
    row.update(overrides)
    return row


def csv_text(
    rows: list[dict[str, str]], delimiter: str = ";", header: list[str] | None = None
) -> str:
    names = header if header is not None else list(rows[0])
    lines = [delimiter.join(names)]
    lines += [delimiter.join(row[name.strip().lower()] for name in names) for row in rows]
    return "\r\n".join(lines) + "\r\n"


def write(tmp_path: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def rejected(path: Path, form: Form = Form.BASIS, **kwargs: int) -> str:
    with pytest.raises(RejectedInput) as caught:
        read_extract(path, form, **kwargs)
    message = str(caught.value)
    assert SENTINEL not in message
    assert caught.value.detail == message
    return message


# --- accepted conventions ------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [";", ","])
def test_reads_either_delimiter(tmp_path: Path, delimiter: str) -> None:
    rows = [basis_row(), basis_row(record_id="r2", unit_code="U2", age="40")]
    raw = read_extract(write(tmp_path, "b.csv", csv_text(rows, delimiter)), Form.BASIS)
    assert raw.column_names == BASIS
    assert all(field.type == pa.string() for field in raw.schema)
    assert raw.column("record_id").to_pylist() == ["r1", "r2"]
    assert raw.column("age").to_pylist() == ["35", "40"]
    assert raw.column("intake_date").to_pylist() == ["01.03.2021", "01.03.2021"]
    # empty cell = missing
    assert raw.column("dudit").to_pylist() == [None, None]


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    raw = read_extract(
        write(tmp_path, "b.csv", b"\xef\xbb\xbf" + csv_text([basis_row()]).encode()), Form.BASIS
    )
    assert raw.column_names[0] == "record_id"
    assert raw.column("record_id").to_pylist() == ["r1"]


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_norwegian_letters_in_either_encoding(tmp_path: Path, encoding: str) -> None:
    unit = "Rusklinikk Ålesund Øst, avd. æøå ÆØÅ"
    text = csv_text([basis_row(unit_code=f'"{unit}"')])
    raw = read_extract(write(tmp_path, "b.csv", text, encoding), Form.BASIS)
    assert raw.column("unit_code").to_pylist() == [unit]


def test_mixed_case_header_with_spaces_in_file_order(tmp_path: Path) -> None:
    header = [" Unit_Code ", "RECORD_ID", *BASIS[1:4], *BASIS[5:]]
    raw = read_extract(write(tmp_path, "b.csv", csv_text([basis_row()], ";", header)), Form.BASIS)
    assert raw.column_names == ["unit_code", "record_id", *BASIS[1:4], *BASIS[5:]]
    assert raw.column("unit_code").to_pylist() == ["U1"]


def test_quoted_fields_may_hold_the_delimiter_and_values_are_stripped(tmp_path: Path) -> None:
    rows = [basis_row(unit_code='"Avd. 1; sengepost"', icd10="  F11  ", clinical_study_id="   ")]
    raw = read_extract(write(tmp_path, "b.csv", csv_text(rows, ";")), Form.BASIS)
    assert raw.column("unit_code").to_pylist() == ["Avd. 1; sengepost"]
    assert raw.column("icd10").to_pylist() == ["F11"]
    assert raw.column("clinical_study_id").to_pylist() == [None]
    rows = [basis_row(unit_code='"Avd. 1, sengepost"')]
    raw = read_extract(write(tmp_path, "c.csv", csv_text(rows, ",")), Form.BASIS)
    assert raw.column("unit_code").to_pylist() == ["Avd. 1, sengepost"]


# ASCII cells with and without the bytes Arrow strips (its ASCII whitespace: space, tab, vertical
# tab, form feed, the separators 0x1C-0x1F; a carriage return only inside quotes, where a value
# may hold it): a file without any takes the path that does not strip (`etl.read._ASCII_BLANKS`).
_STRIPPED = " \t\x0b\x0c\r\x1c\x1d\x1e\x1f"
_ASCII_CELLS = st.text(alphabet=st.sampled_from("aZ09.-_/ \t\x0b\x0c\x1c\x1f"), max_size=6)
_QUOTED_CELLS = st.text(alphabet=st.sampled_from("aZ0.\r \x1d\x1e"), max_size=6)
_UNITS = st.tuples(_ASCII_CELLS, st.just(False)) | st.tuples(_QUOTED_CELLS, st.just(True))


@settings(max_examples=300, deadline=None)
@given(cells=st.lists(st.tuples(_UNITS, _ASCII_CELLS), min_size=1, max_size=4))
def test_ascii_values_read_stripped_with_or_without_blanks_in_the_file(
    tmp_path_factory: pytest.TempPathFactory, cells: list[tuple[tuple[str, bool], str]]
) -> None:
    rows = [
        basis_row(record_id=f"r{i}", unit_code=f'"{unit}"' if quoted else unit, icd10=icd10)
        for i, ((unit, quoted), icd10) in enumerate(cells)
    ]
    path = write(tmp_path_factory.mktemp("ascii"), "b.csv", csv_text(rows))
    raw = read_extract(path, Form.BASIS)

    def stripped(cell: str) -> str | None:
        return cell.strip(_STRIPPED) or None

    assert raw.column("unit_code").to_pylist() == [stripped(unit) for (unit, _), _ in cells]
    assert raw.column("icd10").to_pylist() == [stripped(icd10) for _, icd10 in cells]


def test_entirely_empty_rows_are_dropped(tmp_path: Path) -> None:
    text = csv_text([basis_row()]) + ";" * (len(BASIS) - 1) + "\r\n\r\n"
    raw = read_extract(write(tmp_path, "b.csv", text), Form.BASIS)
    assert raw.num_rows == 1


def test_both_date_formats_normalise_to_the_same_date(tmp_path: Path) -> None:
    rows = [
        basis_row(intake_date="01.03.2021"),
        basis_row(record_id="r2", intake_date="2021-03-01"),
    ]
    raw = read_extract(write(tmp_path, "b.csv", csv_text(rows)), Form.BASIS)
    typed = normalise(raw, Form.BASIS).table
    assert typed.column("intake_date").to_pylist() == [date(2021, 3, 1), date(2021, 3, 1)]
    assert typed.column("referral_date").to_pylist() == [date(2021, 2, 15)] * 2


def write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    """A workbook of these rows on its first sheet, saved at `path`."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def test_xlsx_first_sheet_header_in_row_1(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "npr.xlsx",
        [
            [" Provider_Orgnr", "YEAR", "episodes"],
            ["983974880", 2021, 12],
            [983974899, 2022.0, None],
            [None, None, None],
        ],
    )
    raw = read_extract(path, Form.NPR_COUNTS)
    assert raw.column_names == ["provider_orgnr", "year", "episodes"]
    assert raw.to_pylist() == [
        {"provider_orgnr": "983974880", "year": "2021", "episodes": "12"},
        {"provider_orgnr": "983974899", "year": "2022", "episodes": None},
    ]


def test_xlsx_dates_become_iso_text(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "optout.xlsx",
        [
            ["record_id", "patient_pseudonym", "provider_orgnr", "optout_date"],
            ["o1", "p1", "983974880", datetime(2023, 5, 17)],
        ],
    )
    raw = read_extract(path, Form.OPTOUT)
    assert raw.column("optout_date").to_pylist() == ["2023-05-17"]


def test_parquet_with_date_and_integer_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "record_id": ["o1", "o2"],
            "patient_pseudonym": ["p1", "p2"],
            "provider_orgnr": ["983974880", None],
            "optout_date": pa.array([date(2023, 5, 17), date(1999, 1, 2)], pa.date32()),
        }
    )
    pq.write_table(table, tmp_path / "o.parquet")
    raw = read_extract(tmp_path / "o.parquet", Form.OPTOUT)
    assert raw.schema == pa.schema([(n, pa.string()) for n in table.column_names])
    assert raw.column("optout_date").to_pylist() == ["2023-05-17", "1999-01-02"]
    assert raw.column("provider_orgnr").to_pylist() == ["983974880", None]
    npr = pa.table(
        {"Provider_Orgnr": ["983974880"], "year": pa.array([2021], pa.int16()), "episodes": [-3]}
    )
    pq.write_table(npr, tmp_path / "n.parquet")
    raw = read_extract(tmp_path / "n.parquet", Form.NPR_COUNTS)
    assert raw.to_pylist() == [{"provider_orgnr": "983974880", "year": "2021", "episodes": "-3"}]


def test_parquet_with_iso_string_dates(tmp_path: Path) -> None:
    table = pa.table(
        {
            "record_id": ["o1"],
            "patient_pseudonym": ["p1"],
            "provider_orgnr": ["983974880"],
            "optout_date": ["2023-05-17"],
        }
    )
    pq.write_table(table, tmp_path / "o.parquet")
    raw = read_extract(tmp_path / "o.parquet", Form.OPTOUT)
    assert normalise(raw, Form.OPTOUT).table.column("optout_date").to_pylist() == [
        date(2023, 5, 17)
    ]


def _optout_parquet(tmp_path: Path, dates: pa.Array) -> pa.Table:
    table = pa.table(
        {
            "record_id": [f"o{i}" for i in range(len(dates))],
            "patient_pseudonym": [f"p{i}" for i in range(len(dates))],
            "provider_orgnr": ["983974880"] * len(dates),
            "optout_date": dates,
        }
    )
    pq.write_table(table, tmp_path / "o.parquet")
    return read_extract(tmp_path / "o.parquet", Form.OPTOUT)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("zone", [None, "UTC", "Europe/Oslo"])
def test_parquet_timestamps_at_midnight_are_dates(
    tmp_path: Path, unit: str, zone: str | None
) -> None:
    # pandas writes datetime64 as timestamp[ns] or [us], Spark [us]: a date column at midnight.
    # With a time zone, midnight in the column's own zone (the wall-clock date written).
    moments = [datetime(2023, 5, 17), datetime(1969, 12, 31), None, datetime(2021, 3, 28)]
    values = pa.array(moments, pa.timestamp(unit))
    if zone is not None:
        values = pc.assume_timezone(values, zone)
    raw = _optout_parquet(tmp_path, values)
    expected = ["2023-05-17", "1969-12-31", None, "2021-03-28"]
    assert raw.column("optout_date").to_pylist() == expected
    typed = normalise(raw, Form.OPTOUT)
    assert typed.table.column("optout_date").to_pylist() == [
        date(2023, 5, 17), date(1969, 12, 31), None, date(2021, 3, 28)
    ]  # fmt: skip
    assert typed.invalid["optout_date"].to_pylist() == [False] * 4


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("zone", [None, "Europe/Oslo"])
def test_parquet_timestamps_with_a_time_of_day_are_not_dates(
    tmp_path: Path, unit: str, zone: str | None
) -> None:
    moments = [datetime(2023, 5, 17, 0, 0, 1), datetime(2023, 5, 17, 12, 30)]
    if unit != "s":
        moments.append(datetime(2023, 5, 17, 0, 0, 0, 1000))  # a millisecond past midnight
    values = pa.array(moments, pa.timestamp(unit))
    if zone is not None:
        values = pc.assume_timezone(values, zone)
    typed = normalise(_optout_parquet(tmp_path, values), Form.OPTOUT)
    assert typed.table.column("optout_date").to_pylist() == [None] * len(moments)
    assert typed.invalid["optout_date"].to_pylist() == [True] * len(moments)


def test_a_zoned_timestamp_is_the_date_of_its_own_zone(tmp_path: Path) -> None:
    # 2021-03-01 00:00 in Oslo is stored as 2021-02-28 23:00 UTC; it is 1 March, a date.
    utc = pa.array([datetime(2021, 2, 28, 23, 0)], pa.timestamp("us", tz="UTC"))
    oslo = utc.cast(pa.timestamp("us", tz="Europe/Oslo"))
    assert _optout_parquet(tmp_path, oslo).column("optout_date").to_pylist() == ["2021-03-01"]
    # The same instant in a UTC column is 23:00, not a date.
    assert _optout_parquet(tmp_path, utc).column("optout_date").to_pylist() == [
        "2021-02-28T23:00:00.000000"
    ]


def test_pandas_datetime_columns_are_dates(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame([basis_row(dudit="7", home_hf_orgnr="983974880", clinical_study_id="S")])
    frame["intake_date"] = pd.to_datetime(["2021-03-01"])
    frame["referral_date"] = pd.to_datetime(["2021-02-15"]).tz_localize("Europe/Oslo")
    frame.to_parquet(tmp_path / "b.parquet")
    raw = read_extract(tmp_path / "b.parquet", Form.BASIS)
    assert raw.column("intake_date").to_pylist() == ["2021-03-01"]
    assert raw.column("referral_date").to_pylist() == ["2021-02-15"]
    typed = normalise(raw, Form.BASIS).table
    assert typed.column("intake_date").to_pylist() == [date(2021, 3, 1)]


# --- refusals ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in rejected(tmp_path / "nothing.csv")


def test_empty_file(tmp_path: Path) -> None:
    assert "empty" in rejected(write(tmp_path, "b.csv", b""))


def test_header_only(tmp_path: Path) -> None:
    assert "no data rows" in rejected(write(tmp_path, "b.csv", ";".join(BASIS) + "\r\n"))


def test_unknown_column_is_named_when_it_is_a_column_of_another_form(tmp_path: Path) -> None:
    header = [*BASIS, "discharge_date"]
    rows = [basis_row(discharge_date=SENTINEL)]
    message = rejected(write(tmp_path, "b.csv", csv_text(rows, ";", header)))
    assert "'discharge_date'" in message
    assert "not part of form 'basis'" in message


# Letters only: it passes any "looks like a column name" test; a pseudonym or a name can.
LETTERS_SENTINEL = "olanordmann"
NOT_A_HEADER = (
    "The first row is not a header of form '{}' (too few of its cells are column names): was the "
    "header row left out? Its cells are not shown, as they may be a record's values"
)


def test_a_workbook_without_its_header_row_never_echoes_the_first_record(tmp_path: Path) -> None:
    # The first record's values stand in the header: a letters-only pseudonym, duplicate and empty
    # cells, even a value that is a column name. None is quoted; the file is said to lack a header.
    record = basis_row(patient_pseudonym=LETTERS_SENTINEL, unit_code="sex", dudit="12")
    write_xlsx(tmp_path / "b.xlsx", [list(record.values()), list(basis_row().values())])
    message = rejected(tmp_path / "b.xlsx")
    assert message == NOT_A_HEADER.format("basis")
    assert LETTERS_SENTINEL not in message


def test_a_parquet_file_named_by_its_first_record_never_echoes_it(tmp_path: Path) -> None:
    # A headerless CSV read by pandas as if it had a header, written as Parquet: the names are the
    # first record's values, made unique ("1", "1.1", ...).
    record = basis_row(patient_pseudonym=LETTERS_SENTINEL, unit_code="age")
    names = [f"{value}.{i}" for i, value in enumerate(record.values())]
    names[2], names[4] = LETTERS_SENTINEL, "age"
    values = basis_row().values()
    table = pa.table({name: [value] for name, value in zip(names, values, strict=True)})
    pq.write_table(table, tmp_path / "b.parquet")
    message = rejected(tmp_path / "b.parquet")
    assert message == NOT_A_HEADER.format("basis")
    assert LETTERS_SENTINEL not in message


@pytest.mark.parametrize(
    "name",
    [
        "01019000083",  # an identity number
        "pas 010190 00083",  # one as people write it
        "født 01.01.90",  # a birth date
        "x" * 65,  # a free text, not a name
    ],
)
def test_a_header_name_that_could_be_a_value_is_not_echoed(tmp_path: Path, name: str) -> None:
    header = [*BASIS, name]
    rows = [basis_row(**{name: "x"})]
    message = rejected(write(tmp_path, "b.csv", csv_text(rows, ";", header)))
    assert message == (
        "Column(s) not part of form 'basis': column 22 (name not shown: it could be a value); an "
        "unexpected column may carry identifying data, so the file is rejected whole"
    )


def test_missing_required_column(tmp_path: Path) -> None:
    header = [name for name in BASIS if name != "age"]
    message = rejected(write(tmp_path, "b.csv", csv_text([basis_row()], ";", header)))
    assert message == "Required column(s) of form 'basis' missing: age"


def test_missing_optional_column_is_accepted(tmp_path: Path) -> None:
    header = [name for name in BASIS if name != "dudit"]
    raw = read_extract(write(tmp_path, "b.csv", csv_text([basis_row()], ";", header)), Form.BASIS)
    assert "dudit" not in raw.column_names
    assert normalise(raw, Form.BASIS).table.column("dudit").to_pylist() == [None]


def test_wrong_form_is_named(tmp_path: Path) -> None:
    names = FORMS[Form.DISCHARGE].column_names
    row = dict.fromkeys(names, "1") | {"patient_pseudonym": SENTINEL}
    message = rejected(write(tmp_path, "d.csv", csv_text([row])), Form.BASIS)
    assert "form 'discharge', not 'basis'" in message


def test_undetectable_delimiter(tmp_path: Path) -> None:
    message = rejected(write(tmp_path, "b.csv", csv_text([basis_row()], "\t")))
    assert "was the header row left out, or another delimiter used?" in message


def test_a_header_as_known_under_either_delimiter_is_undetectable(tmp_path: Path) -> None:
    # One column name under ';' and one under ',': no evidence for either.
    message = rejected(write(tmp_path, "b.csv", "record_id;episode_id,unit_code\r\nx;y,z\r\n"))
    assert message == (
        "Undetectable delimiter: the first row must be the column names, separated by ';' or ','"
    )


def test_mixed_utf8_and_cp1252(tmp_path: Path) -> None:
    text = csv_text([basis_row(unit_code="Ålesund"), basis_row(record_id="r2", unit_code="X")])
    data = text.encode("utf-8").replace(b"X", "Øst".encode("cp1252"))
    message = rejected(write(tmp_path, "b.csv", data))
    assert "Mixed or undecodable encoding" in message
    assert "line 3" in message


def test_byte_undefined_in_cp1252(tmp_path: Path) -> None:
    data = csv_text([basis_row(unit_code="X")]).encode().replace(b"X", b"\x81")
    message = rejected(write(tmp_path, "b.csv", data))
    assert "undefined in Windows-1252 on line 2" in message


def test_utf16_is_refused(tmp_path: Path) -> None:
    assert "NUL bytes" in rejected(write(tmp_path, "b.csv", csv_text([basis_row()]), "utf-16"))


def test_ragged_row_names_the_line(tmp_path: Path) -> None:
    good = csv_text([basis_row(), basis_row(record_id="r2")])
    bad = ";".join(basis_row(record_id="r3").values()) + ";extra\r\n"
    message = rejected(write(tmp_path, "b.csv", good + bad + good.split("\r\n", 1)[1]))
    assert message.startswith("1 row(s) with the wrong number of fields")
    assert "the header has 21" in message
    assert "line 4" in message


def test_truncated_file(tmp_path: Path) -> None:
    text = csv_text([basis_row(), basis_row(record_id="r2")])
    message = rejected(write(tmp_path, "b.csv", text[: text.rindex(SENTINEL) + 5]))
    assert "1 row(s) with the wrong number of fields" in message
    assert "line 3" in message


def test_duplicate_column_names(tmp_path: Path) -> None:
    header = [*BASIS, " AGE"]
    rows = [basis_row()]
    message = rejected(write(tmp_path, "b.csv", csv_text(rows, ";", header)))
    assert message == "Duplicate column name(s) in the header: 'age'"


def test_file_over_max_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", csv_text([basis_row()]))
    message = rejected(path, max_bytes=100)
    assert f"is {path.stat().st_size} bytes, over the limit of 100" in message


def test_unknown_suffix(tmp_path: Path) -> None:
    assert "Unknown file type" in rejected(write(tmp_path, "b.json", csv_text([basis_row()])))


def test_magic_bytes_must_match_the_suffix(tmp_path: Path) -> None:
    assert "no zip signature" in rejected(write(tmp_path, "b.xlsx", csv_text([basis_row()])))
    assert "no PAR1 signature" in rejected(write(tmp_path, "b.parquet", csv_text([basis_row()])))
    pq.write_table(pa.table({"record_id": [SENTINEL]}), tmp_path / "x.parquet")
    (tmp_path / "x.parquet").rename(tmp_path / "x.csv")
    assert "binary file" in rejected(tmp_path / "x.csv")


def test_a_compressed_csv_is_refused_as_compressed_not_as_an_encoding(tmp_path: Path) -> None:
    text = csv_text([basis_row()]).encode()
    for name, data in [
        ("gzip", gzip.compress(text)),
        ("bzip2", bz2.compress(text)),
        ("xz", lzma.compress(text)),
    ]:
        path = tmp_path / f"{name}.csv"
        path.write_bytes(data)
        assert rejected(path) == (
            f"The text file is compressed ({name}): decompress it and send the CSV itself"
        )


def test_xlsx_with_data_on_several_sheets_reads_the_first(tmp_path: Path) -> None:
    # EXTRACT_SPEC.md: "XLSX: first sheet". The other sheet's data is not read, and the reader's
    # note says so, without its value.
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["provider_orgnr", "year", "episodes"])
    sheet.append(["983974880", 2021, 1])
    workbook.create_sheet("Ark2")
    workbook.create_sheet("notes")["C4"] = SENTINEL
    workbook.save(tmp_path / "n.xlsx")
    raw = read_extract(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert raw.to_pylist() == [{"provider_orgnr": "983974880", "year": "2021", "episodes": "1"}]
    assert json.loads(raw.schema.metadata[READ_NOTES]) == [
        "Sheet 3 of the workbook holds data and was not read: an extract is read from "
        "the first sheet only"
    ]


def test_xlsx_zip_bomb_is_refused_before_opening(tmp_path: Path) -> None:
    path = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"0" * 5_000_000)
    assert "compression ratio is over 100" in rejected(path, Form.NPR_COUNTS)


def test_xlsx_over_the_uncompressed_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etl.read, "XLSX_MAX_UNCOMPRESSED", 1000)
    write_xlsx(tmp_path / "n.xlsx", [["provider_orgnr", "year", "episodes"]])
    assert "over the limit of 1000" in rejected(tmp_path / "n.xlsx", Form.NPR_COUNTS)


def test_parquet_with_unknown_column(tmp_path: Path) -> None:
    table = pa.table(
        {"provider_orgnr": ["983974880"], "year": [2021], "episodes": [1], "name": [SENTINEL]}
    )
    pq.write_table(table, tmp_path / "n.parquet")
    # "name" is no column of any form, but the header is evidently one: the column is named.
    assert rejected(tmp_path / "n.parquet", Form.NPR_COUNTS).startswith(
        "Column(s) not part of form 'npr_counts': 'name'; an unexpected column"
    )


NPR_HEADER = "provider_orgnr;year;episodes"


def test_ragged_row_line_counts_blank_lines(tmp_path: Path) -> None:
    text = f"{NPR_HEADER}\r\n983974880;2021;1\r\n\r\n\r\n983974880;2022;2\r\n{SENTINEL};2\r\n"
    message = rejected(write(tmp_path, "n.csv", text), Form.NPR_COUNTS)
    assert message.endswith("the first on line 6")


def test_lines_of_blanks_are_empty_lines(tmp_path: Path) -> None:
    # A file ending in a line of spaces and one of a tab was refused as 2 ragged rows.
    text = f"{NPR_HEADER}\r\n983974880;2021;1\r\n   \r\n983974880;2022;2\n   \n\t\n \t \n"
    raw = read_extract(write(tmp_path, "n.csv", text), Form.NPR_COUNTS)
    assert raw.column("year").to_pylist() == ["2021", "2022"]
    # A ragged row after them is still found, on its own line.
    message = rejected(write(tmp_path, "r.csv", text + "983974880;2023\n"), Form.NPR_COUNTS)
    assert message.startswith("1 row(s) with the wrong number of fields")
    assert message.endswith("the first on line 8")


def test_lone_carriage_return_line_breaks(tmp_path: Path) -> None:
    raw = read_extract(
        write(tmp_path, "n.csv", f"{NPR_HEADER}\r983974880;2021;1\r"), Form.NPR_COUNTS
    )
    assert raw.to_pylist() == [{"provider_orgnr": "983974880", "year": "2021", "episodes": "1"}]


def test_unclosed_quote_is_a_broken_row(tmp_path: Path) -> None:
    text = f'{NPR_HEADER}\n"{SENTINEL};2021;1\n983974880;2021;2\n'
    message = rejected(write(tmp_path, "n.csv", text), Form.NPR_COUNTS)
    assert "wrong number of fields" in message
    assert "line 2" in message


def test_unreadable_parquet(tmp_path: Path) -> None:
    pq.write_table(pa.table({"provider_orgnr": [SENTINEL] * 50}), tmp_path / "n.parquet")
    data = (tmp_path / "n.parquet").read_bytes()
    path = write(tmp_path, "t.parquet", data[: len(data) // 2])
    assert rejected(path, Form.NPR_COUNTS) == "The .parquet file is not a readable Parquet file"


def test_parquet_nested_column_is_refused_by_name(tmp_path: Path) -> None:
    table = pa.table({"provider_orgnr": [[SENTINEL]], "year": [2021], "episodes": [1]})
    pq.write_table(table, tmp_path / "n.parquet")
    message = rejected(tmp_path / "n.parquet", Form.NPR_COUNTS)
    assert message.startswith("Column 'provider_orgnr' of the Parquet file has a type")


def test_parquet_duplicate_after_lower_casing(tmp_path: Path) -> None:
    table = pa.table({"provider_orgnr": [SENTINEL], "Year": [1], "year": [2], "episodes": [1]})
    pq.write_table(table, tmp_path / "n.parquet")
    assert rejected(tmp_path / "n.parquet", Form.NPR_COUNTS).endswith("header: 'year'")


def test_zip_that_is_no_workbook(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "n.xlsx", "w") as archive:
        archive.writestr("notes.txt", SENTINEL)
    assert (
        rejected(tmp_path / "n.xlsx", Form.NPR_COUNTS)
        == "The .xlsx file is not a readable workbook"
    )


def test_xlsx_values_beyond_the_header(tmp_path: Path) -> None:
    write_xlsx(
        tmp_path / "n.xlsx",
        [
            ["provider_orgnr", "year", "episodes"],
            ["983974880", 2021, 1],
            ["983974880", 2022, 1, SENTINEL],
        ],
    )
    message = rejected(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert message == "Row 3 of the workbook has values beyond the header's 3 columns"


def test_xlsx_styled_empty_cells_far_right_are_no_values_and_a_value_there_is(
    tmp_path: Path,
) -> None:
    """A styled empty cell in the sheet's last column (XFD) makes every row 16,384 cells wide:
    such rows are read as empty past the header (each cell used to be turned into text, about 10
    minutes for a 9 MB workbook of a million such rows); a value there still rejects the file."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["provider_orgnr", "year", "episodes"])
    sheet.append(["983974880", 2021, 1])
    sheet["XFD2"].number_format = "0.00"
    sheet["XFD2"].font = openpyxl.styles.Font(bold=True)
    sheet["XFD3"].font = openpyxl.styles.Font(bold=True)
    workbook.save(tmp_path / "styled.xlsx")
    raw = read_extract(tmp_path / "styled.xlsx", Form.NPR_COUNTS)
    assert raw.to_pylist() == [{"provider_orgnr": "983974880", "year": "2021", "episodes": "1"}]
    sheet["XFD3"] = " x "
    workbook.save(tmp_path / "valued.xlsx")
    message = rejected(tmp_path / "valued.xlsx", Form.NPR_COUNTS)
    assert message == "Row 3 of the workbook has values beyond the header's 3 columns"


def test_xlsx_without_header_does_not_echo_the_first_record(tmp_path: Path) -> None:
    write_xlsx(tmp_path / "n.xlsx", [[SENTINEL, 2021, 1]])
    message = rejected(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert message == NOT_A_HEADER.format("npr_counts")
    assert SENTINEL.lower() not in message


# --- numbers that lost their leading zero (privacy guard) ----------------------------------------

# 010190000 + check digits 8, 3 (k1: 3*0+7*1+6*0+1*1+8*9+9*0+4*0+5*0+2*0 = 80, 80 mod 11 = 3,
# 11-3 = 8; k2: 5*0+4*1+3*0+2*1+7*9+6*0+5*0+4*0+3*0+2*8 = 85, 85 mod 11 = 8, 11-8 = 3): a valid
# identity number born 01.01.90 that a number cell renders as 1019000083.
LEADING_ZERO_ID = "01019000083"


def test_parquet_integer_column_holding_an_identity_number_is_refused(tmp_path: Path) -> None:
    assert is_identity_number(LEADING_ZERO_ID)
    table = pa.table(
        {
            "record_id": pa.array([int(LEADING_ZERO_ID), 7], pa.int64()),
            "patient_pseudonym": ["p1", "p2"],
            "provider_orgnr": ["983974880", "983974880"],
            "optout_date": ["2023-05-17", "2023-05-17"],
        }
    )
    pq.write_table(table, tmp_path / "o.parquet")
    raw = read_extract(tmp_path / "o.parquet", Form.OPTOUT)
    assert raw.column("record_id").to_pylist() == [LEADING_ZERO_ID[1:], "7"]
    with pytest.raises(PrivacyViolation) as caught:
        guard(raw)
    assert "column 'record_id' (1)" in caught.value.detail
    assert LEADING_ZERO_ID[1:] not in caught.value.detail
    assert "patient_pseudonym" not in caught.value.detail


def test_xlsx_number_cell_holding_an_identity_number_is_refused(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "optout.xlsx",
        [
            ["record_id", "patient_pseudonym", "provider_orgnr", "optout_date"],
            ["o1", int(LEADING_ZERO_ID), "983974880", datetime(2023, 5, 17)],
            ["o2", "p2", "983974880", datetime(2023, 5, 17)],
        ],
    )
    raw = read_extract(path, Form.OPTOUT)
    with pytest.raises(PrivacyViolation) as caught:
        guard(raw)
    assert "column 'patient_pseudonym' (1)" in caught.value.detail
    assert LEADING_ZERO_ID[1:] not in caught.value.detail


def test_ten_digit_text_is_not_padded(tmp_path: Path) -> None:
    # Text keeps its zeros: 1019000083 in a CSV or a Parquet string column is ten digits, not an
    # identity number (no false positives on text).
    assert is_identity_number(LEADING_ZERO_ID)  # padded, it would be caught
    path = write(tmp_path, "b.csv", csv_text([basis_row(clinical_study_id=LEADING_ZERO_ID[1:])]))
    assert find_identity_numbers(read_extract(path, Form.BASIS)) == {}
    table = pa.table(
        {
            "record_id": [LEADING_ZERO_ID[1:]],
            "patient_pseudonym": ["p1"],
            "provider_orgnr": ["983974880"],
            "optout_date": ["2023-05-17"],
        }
    )
    pq.write_table(table, tmp_path / "o.parquet")
    assert find_identity_numbers(read_extract(tmp_path / "o.parquet", Form.OPTOUT)) == {}


# --- Windows-1252 or UTF-8 (`_decode`) -----------------------------------------------------------

# Norwegian text and the Windows-1252 signs an export holds (en and em dash, curly quotes, the
# no-break space, °, €, …, •, « »). Left out: the signs that after 'Å' or 'Æ' are the UTF-8 of a
# Sami letter (ƒ „ Š ‹ ¡ ¦ § ½ ¾ ·; see `_decode`).
_NORWEGIAN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .-/æøåÆØÅéÉáÁüö"
_SIGNS = "–—‘’“”\xa0°€…•«»"
_TEXTS = st.text(alphabet=_NORWEGIAN + _SIGNS, min_size=1, max_size=30).filter(
    lambda text: "Å\xa0" not in text  # the UTF-8 of Š: ambiguous (see `_decode`)
)


def _file(*values: bytes) -> bytes:
    header = b"record_id;unit_code;clinical_study_id"
    return header + b"\r\n" + b"r1;" + b";".join(values) + b"\r\n"


@pytest.mark.parametrize(
    "unit", ["Avd. Ø–2", "Æ°", "Å–1", "Ø”3", "Æ\xa0Ø\xa0x", "Ø‘x’", "ÅÆØ—æøå", "Å’"]
)
@pytest.mark.parametrize("study", ["Blåbær", "", "S-1"])
def test_cp1252_capital_letter_before_a_sign_is_cp1252(
    tmp_path: Path, unit: str, study: str
) -> None:
    # Windows-1252 'Ø–' is D8 96, well-formed UTF-8 (U+0616), but no letter of a Norwegian file:
    # neither proof of mixing (beside 'Blåbær') nor, alone, a reason to read the file as UTF-8.
    text = csv_text([basis_row(unit_code=unit, clinical_study_id=study)])
    raw = read_extract(write(tmp_path, "b.csv", text, "cp1252"), Form.BASIS)
    assert raw.column("unit_code").to_pylist() == [unit.strip()]
    assert raw.column("clinical_study_id").to_pylist() == [study or None]


def test_the_reviewers_cp1252_files_are_read_as_written(tmp_path: Path) -> None:
    mixed = csv_text([basis_row(unit_code="Avd. Ø–2", clinical_study_id="Blåbær")])
    silent = csv_text([basis_row(unit_code="Avd. Ø–2")])
    assert silent.encode("cp1252").decode("utf-8")  # valid UTF-8 by accident
    for name, text in (("mixed.csv", mixed), ("silent.csv", silent)):
        raw = read_extract(write(tmp_path, name, text, "cp1252"), Form.BASIS)
        assert raw.column("unit_code").to_pylist() == ["Avd. Ø–2"]


def test_utf8_letters_beside_a_cp1252_sign_pair_are_mixed(tmp_path: Path) -> None:
    # Valid UTF-8 as a whole: UTF-8 'Blåbær', then Windows-1252 'Ø–' (U+0616 in UTF-8).
    text = csv_text([basis_row(clinical_study_id="Blåbær"), basis_row(record_id="r2")])
    data = text.encode("utf-8") + b"r3;" + "Ø–".encode("cp1252") + b"\r\n"
    data.decode("utf-8")
    assert "UTF-8 and other bytes mixed (first bad byte on line 4)" in rejected(
        write(tmp_path, "b.csv", data)
    )


@pytest.mark.parametrize(
    "unit",
    [
        "Kárášjohka Sámi klinihkka",  # North Sami
        "Ŋŋ Čč Đđ Ŧŧ Žž Ńń Ǩǩ",  # Sami letters beyond Latin-1
        "Ålesund",
        "A\u030alesund o\u0308st",  # decomposed (combining ring above, diaeresis)
        "Avd. 2 – “Øst” … € ™ •",
    ],
)
def test_utf8_of_norwegian_and_sami_text_stays_utf8(tmp_path: Path, unit: str) -> None:
    raw = read_extract(write(tmp_path, "b.csv", csv_text([basis_row(unit_code=unit)])), Form.BASIS)
    assert raw.column("unit_code").to_pylist() == [unit]


def test_utf8_that_windows_1252_cannot_have_written_stays_utf8(tmp_path: Path) -> None:
    # Cyrillic Н is D0 9D; 0x9D is undefined in Windows-1252.
    unit = "Нина"
    raw = read_extract(write(tmp_path, "b.csv", csv_text([basis_row(unit_code=unit)])), Form.BASIS)
    assert raw.column("unit_code").to_pylist() == [unit]


@settings(max_examples=300, deadline=None)
@given(unit=_TEXTS, study=_TEXTS)
def test_norwegian_text_reads_the_same_from_either_encoding(unit: str, study: str) -> None:
    for encoding in ("utf-8", "cp1252"):
        data = _file(unit.encode(encoding), study.encode(encoding))
        assert etl.read._decode(data) == _file(unit.encode(), study.encode()), encoding


@settings(max_examples=300, deadline=None)
@given(
    letters=_TEXTS.filter(lambda text: any(c in "æøåÆØÅ" for c in text)),
    other=_TEXTS.filter(lambda text: not text.isascii()),
)
def test_utf8_norwegian_letters_beside_cp1252_text_are_refused(letters: str, other: str) -> None:
    for data in (
        _file(letters.encode("utf-8"), other.encode("cp1252")),
        _file(other.encode("cp1252"), letters.encode("utf-8")),
    ):
        with pytest.raises(RejectedInput, match="UTF-8 and other bytes mixed"):
            etl.read._decode(data)


@pytest.mark.parametrize(
    ("serial", "rejected"), [(15038500047, True), (1019000083, True), (99999999, False)]
)
def test_xlsx_a_date_cell_holding_an_identity_number_rejects_the_workbook_unechoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], serial: int, rejected: bool
) -> None:
    """A number in a date-formatted cell that is no date: openpyxl warned with the number (on
    stderr, the server's log) and put "#VALUE!" in its place, so an identity number passed the
    guard. Now the warning is recorded, never shown, and its number goes through the detector
    (with the leading zero a number drops); a number that is no identity number stays an
    unreadable date (its row quarantined by the form's check)."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["record_id", "patient_pseudonym", "provider_orgnr", "optout_date"])
    sheet.append(["o1", "p1", "983974880", serial])
    sheet["D2"].number_format = "dd.mm.yyyy"
    path = tmp_path / "optout.xlsx"
    workbook.save(path)
    if rejected:
        with pytest.raises(PrivacyViolation, match=r"A date cell of the workbook \(D2\)") as error:
            read_extract(path, Form.OPTOUT)
        assert str(serial) not in str(error.value)
    else:
        assert read_extract(path, Form.OPTOUT).column("optout_date").to_pylist() == ["#VALUE!"]
    captured = capsys.readouterr()
    assert str(serial) not in captured.err + captured.out


def test_xlsx_a_cell_openpyxl_cannot_read_is_rejected_input(tmp_path: Path) -> None:
    """`<v>abc</v>` in a number cell raised ValueError out of the row loop: a 'load failed',
    as if the service were at fault."""
    path = write_xlsx(
        tmp_path / "good.xlsx",
        [
            ["record_id", "patient_pseudonym", "provider_orgnr", "optout_date"],
            ["o1", "p1", 983974880, "2023-05-17"],
        ],
    )
    broken = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"<v>983974880</v>", b"<v>abc</v>")
            target.writestr(item, data)
    with pytest.raises(RejectedInput, match="a cell it cannot read"):
        read_extract(broken, Form.OPTOUT)


def test_a_received_extract_reads_as_the_same_file_on_disk(tmp_path: Path) -> None:
    # The API keeps an upload in memory (`Received`): every format and refusal as from a file.
    write_xlsx(
        tmp_path / "npr.xlsx", [["provider_orgnr", "year", "episodes"], ["983974880", 2021, 12]]
    )
    npr = pa.table({"provider_orgnr": ["983974899"], "year": pa.array([2022], pa.int16())})
    pq.write_table(npr.append_column("episodes", pa.array([7])), tmp_path / "npr.parquet")
    (tmp_path / "npr.csv").write_text("provider_orgnr;year;episodes\n983974880;2023;3\n")
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not parquet PAR1")
    (tmp_path / "npr.json").write_text("{}")
    outcomes = {}
    for name in ("npr.xlsx", "npr.parquet", "npr.csv", "broken.xlsx", "broken.parquet", "npr.json"):
        path = tmp_path / name
        received = _outcome(etl.read.Received(name, path.read_bytes()))
        assert received == _outcome(path), name
        outcomes[name] = received
    assert [outcomes[n] for n in ("npr.xlsx", "npr.parquet", "npr.csv")] == [
        [{"provider_orgnr": "983974880", "year": "2021", "episodes": "12"}],
        [{"provider_orgnr": "983974899", "year": "2022", "episodes": "7"}],
        [{"provider_orgnr": "983974880", "year": "2023", "episodes": "3"}],
    ]
    assert all(isinstance(outcomes[n], str) for n in ("broken.xlsx", "broken.parquet", "npr.json"))


def _outcome(extract: etl.read.Extract) -> list[dict[str, object]] | str:
    """The rows read, or the refusal's message."""
    try:
        rows: list[dict[str, object]] = read_extract(extract, Form.NPR_COUNTS).to_pylist()
    except RejectedInput as error:
        return str(error.detail)
    return rows


def test_pseudonyms_read_from_numbers_get_a_note(tmp_path: Path) -> None:
    # An opt-out file whose pseudonyms were numbers erased no one when the stored ones had
    # leading zeros (0042 loaded from a CSV, 42 in the opt-out), and said nothing.
    def notes(name: str, pseudonyms: pa.Array) -> list[str]:
        table = pa.table({"record_id": ["o1"], "patient_pseudonym": pseudonyms})
        table = table.append_column("provider_orgnr", pa.array(["983974880"]))
        pq.write_table(table.append_column("optout_date", pa.array(["2024-05-31"])), name)
        metadata = read_extract(Path(name), Form.OPTOUT).schema.metadata or {}
        return list(json.loads(metadata[READ_NOTES])) if READ_NOTES in metadata else []

    assert notes(str(tmp_path / "n.parquet"), pa.array([42])) == [etl.read.NUMBER_PSEUDONYMS]
    assert notes(str(tmp_path / "t.parquet"), pa.array(["0042"])) == []
    write_xlsx(
        tmp_path / "o.xlsx",
        [
            ["record_id", "patient_pseudonym", "provider_orgnr", "optout_date"],
            ["o1", 42, "983974880", "31.05.2024"],
        ],
    )
    raw = read_extract(tmp_path / "o.xlsx", Form.OPTOUT)
    assert json.loads((raw.schema.metadata or {})[READ_NOTES]) == [etl.read.NUMBER_PSEUDONYMS]
