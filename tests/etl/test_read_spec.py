"""etl.read.read_extract against the file conventions of EXTRACT_SPEC.md that a review found it
broke: each test is a file an exporter may write, read as the specification says.

Refusals go through `test_read.rejected`, which asserts that the message never carries SENTINEL.
"""

import re
import zipfile
from datetime import date
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import etl.read
from etl.read import read_extract
from schemas.errors import PrivacyViolation
from schemas.forms import Form
from schemas.parsing import normalise
from tests.etl.test_read import (
    BASIS,
    NOT_A_HEADER,
    SENTINEL,
    basis_row,
    csv_text,
    rejected,
    write,
)
from validation import validate_extract
from validation.report import render_html, render_text

NPR_PROVIDERS = frozenset({"983974880", "983974899"})
TODAY = date(2025, 1, 1)
UNEXPECTED = (
    "Column(s) not part of form 'basis': '{}'; an unexpected column may carry identifying data, "
    "so the file is rejected whole"
)

# --- an unexpected column is named ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["patient_name", "comment", "fodselsnummer"])
def test_an_unexpected_csv_column_is_named(tmp_path: Path, name: str) -> None:
    rows = [basis_row(**{name: SENTINEL})]
    message = rejected(write(tmp_path, "b.csv", csv_text(rows, ";", [*BASIS, name])))
    assert message == UNEXPECTED.format(name)


def test_an_unexpected_workbook_column_is_named(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append([*BASIS, " Patient_Name "])
    sheet.append([*basis_row().values(), SENTINEL])
    workbook.save(tmp_path / "b.xlsx")
    assert rejected(tmp_path / "b.xlsx") == UNEXPECTED.format("patient_name")


def test_an_unexpected_parquet_column_is_named(tmp_path: Path) -> None:
    columns = {name: [value] for name, value in basis_row().items()}
    pq.write_table(pa.table(columns | {"comment": [SENTINEL]}), tmp_path / "b.parquet")
    assert rejected(tmp_path / "b.parquet") == UNEXPECTED.format("comment")


def test_a_header_missing_a_required_column_still_names_the_unexpected_one(tmp_path: Path) -> None:
    # 'alder' for 'age': the rest of the row is column names, so it is a header.
    header = ["alder" if name == "age" else name for name in BASIS]
    rows = [basis_row(alder="35")]
    message = rejected(write(tmp_path, "b.csv", csv_text(rows, ";", header)))
    # And the required column it leaves missing: the fix is a rename, not dropping a column.
    assert message == UNEXPECTED.format("alder") + "; required column(s) missing: age"


def test_an_expected_file_is_still_read(tmp_path: Path) -> None:
    raw = read_extract(write(tmp_path, "b.csv", csv_text([basis_row()])), Form.BASIS)
    assert raw.column_names == BASIS


# --- several unexpected columns: the delimiter is still found ------------------------------------


@pytest.mark.parametrize("delimiter", [";", ","])
def test_npr_counts_with_several_unexpected_columns_names_them(
    tmp_path: Path, delimiter: str
) -> None:
    header = delimiter.join(["provider_orgnr", "year", "episodes", "a1", "a2", "a3"])
    row = delimiter.join(["983974880", "2024", "3", SENTINEL, "y", "z"])
    message = rejected(write(tmp_path, "n.csv", f"{header}\r\n{row}\r\n"), Form.NPR_COUNTS)
    assert message == (
        "Column(s) not part of form 'npr_counts': 'a1', 'a2', 'a3'; an unexpected column may "
        "carry identifying data, so the file is rejected whole"
    )


def test_optout_with_more_unexpected_than_expected_columns_names_them_by_position(
    tmp_path: Path,
) -> None:
    # Fewer column names than other cells is also what a header with a record glued to it looks
    # like (next test): the cells are then named by position, never quoted.
    names = ["record_id", "patient_pseudonym", "provider_orgnr", "optout_date"]
    extra = ["name", "address", "phone", "email", "note"]
    row = ["o1", SENTINEL, "983974880", "01.06.2024", SENTINEL, "x", "x", "x", "x"]
    text = ",".join(names + extra) + "\n" + ",".join(row) + "\n"
    message = rejected(write(tmp_path, "o.csv", text), Form.OPTOUT)
    hidden = ", ".join(f"column {n} (name not shown: it could be a value)" for n in range(5, 10))
    assert message.startswith(f"Column(s) not part of form 'optout': {hidden}; ")


def test_a_record_glued_to_the_header_is_never_quoted(tmp_path: Path) -> None:
    # The line break after the header lost: the header's last name and the record's first value
    # make one cell, and every required column is there. Its values were quoted as column names.
    # No two cells alike (a repeated one would be refused as a duplicate name first).
    distinct = {
        "patient_pseudonym": "olanordmann", "sex": "2", "treatment_type": "3",
        "primary_substance": "5", "housing": "4", "employment": "6", "severity": "7",
        "research_consent": "0", "audit": "21", "dudit": "13", "injecting_6m": "9",
        "clinical_study_id": "studie-a", "home_hf_orgnr": "983974899", "age": "44",
    }  # fmt: skip
    header = ";".join(basis_row())  # the column names, in the form's order
    record = ";".join(basis_row(**distinct).values())
    message = rejected(write(tmp_path, "g.csv", header + record + "\r\n" + record + "\r\n"))
    assert message.startswith("Column(s) not part of form 'basis': column 21 (name not shown")
    for value in distinct.values():
        assert f"'{value}'" not in message


def test_a_csv_without_its_header_row_never_echoes_the_first_record(tmp_path: Path) -> None:
    # A value that is a column name ('sex' as a unit code) gives the delimiter; the row is still
    # no header, and nothing of it is quoted.
    rows = [basis_row(unit_code="sex", patient_pseudonym="olanordmann"), basis_row()]
    lines = [";".join(row.values()) for row in rows]
    message = rejected(write(tmp_path, "b.csv", "\r\n".join(lines) + "\r\n"))
    assert message == (
        "The first row is not a header of form 'basis' (too few of its cells are column names): "
        "was the header row left out? Its cells are not shown, as they may be a record's values"
    )


def test_a_header_with_misnamed_required_columns_says_which_are_missing(tmp_path: Path) -> None:
    # Half the cells are the form's names: the header is there, two of its names are not the
    # form's. The missing ones are named by the form's own names; the others only counted.
    text = "record_id;pseudonym;orgnr;optout_date\r\nO1;PA;983974694;01.03.2024\r\n"
    message = rejected(write(tmp_path, "o.csv", text), Form.OPTOUT)
    assert message == (
        "The header of form 'optout' lacks the required column(s) patient_pseudonym, "
        "provider_orgnr; 2 of its 4 cells are not column names of the form (not shown: they "
        "could be values)"
    )


def test_a_workbook_header_with_a_quarter_of_the_names_is_still_a_header(tmp_path: Path) -> None:
    # 6 of 21 cells are basis names (a quarter and more, under half), the rest in Norwegian or
    # values: never quoted, the required columns the header lacks named.
    kept = ["record_id", "episode_id", "intake_date", "age", "sex", "audit"]
    header = [name if name in kept else f"{SENTINEL}-{n}" for n, name in enumerate(BASIS)]
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(header)
    sheet.append(list(basis_row().values()))
    workbook.save(tmp_path / "b.xlsx")
    message = rejected(tmp_path / "b.xlsx")
    assert SENTINEL.lower() not in message  # as the reader lower-cases a header
    assert message == (
        "The header of form 'basis' lacks the required column(s) patient_pseudonym, "
        "provider_orgnr, unit_code, treatment_type, primary_substance, icd10, housing, "
        "employment, severity, research_consent; 15 of its 21 cells are not column names of the "
        "form (not shown: they could be values)"
    )


@pytest.mark.parametrize(
    ("form", "first", "second"),
    [
        # One value that is a column name: no header, whatever the row's width.
        (Form.OPTOUT, "O1;optout_date;983974694;01.03.2024", "O2;PB;983974694;01.03.2024"),
        # Two in a row of 21 (under a quarter): still a record, its header left out.
        (
            Form.BASIS,
            ";".join(basis_row(unit_code="sex", clinical_study_id="age").values()),
            ";".join(basis_row().values()),
        ),
    ],
)
def test_a_record_with_a_value_or_two_that_are_column_names_is_no_header(
    tmp_path: Path, form: Form, first: str, second: str
) -> None:
    message = rejected(write(tmp_path, "f.csv", f"{first}\r\n{second}\r\n"), form)
    assert message == NOT_A_HEADER.format(form.value)


def test_a_csv_whose_first_row_has_no_column_name_has_no_delimiter(tmp_path: Path) -> None:
    lines = [";".join(basis_row().values())] * 2
    message = rejected(write(tmp_path, "b.csv", "\r\n".join(lines) + "\r\n"))
    assert message == (
        "The first row holds no column name separated by ';' or ',': was the header row left "
        "out, or another delimiter used? Its cells are not shown, as they may be a record's values"
    )


# --- XLSX: the first sheet; empty other sheets are no data ---------------------------------------


def _npr_workbook() -> openpyxl.Workbook:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Ark1"
    sheet.append(["provider_orgnr", "year", "episodes"])
    sheet.append(["983974880", 2021, 12])
    sheet.append(["983974899", 2022, 3])
    return workbook


def test_a_workbook_with_empty_other_sheets_is_read_from_the_first(tmp_path: Path) -> None:
    workbook = _npr_workbook()
    workbook.create_sheet("Ark2")
    notes = workbook.create_sheet("Ark3")
    notes["B2"] = "   "  # a blank text, as in the extract itself: empty
    notes["C3"].number_format = "0.00"  # a formatted cell without a value
    workbook.save(tmp_path / "n.xlsx")
    raw = read_extract(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert raw.to_pylist() == [
        {"provider_orgnr": "983974880", "year": "2021", "episodes": "12"},
        {"provider_orgnr": "983974899", "year": "2022", "episodes": "3"},
    ]


NPR_ROWS = [
    {"provider_orgnr": "983974880", "year": "2021", "episodes": "12"},
    {"provider_orgnr": "983974899", "year": "2022", "episodes": "3"},
]
NOT_READ = (
    "Sheet {} of the workbook holds data and was not read: an extract is read from the first "
    "sheet only"
)


def _notes(raw: pa.Table) -> list[str]:
    """The reader's notes, as the validation report takes them (`schemas.forms.READ_NOTES`)."""
    return validate_extract(raw, Form.NPR_COUNTS, known_providers=NPR_PROVIDERS, today=TODAY).notes


@pytest.mark.parametrize("value", [SENTINEL, 0, "Eksportert fra DIPS 2024-03-02"])
def test_a_value_on_another_sheet_is_noted_and_the_first_sheet_read(
    tmp_path: Path, value: object
) -> None:
    # EXTRACT_SPEC.md: "XLSX: first sheet". A value elsewhere (a hidden sheet's too) may be data
    # the user meant to send: it is not read, and the user is told so.
    workbook = _npr_workbook()
    hidden = workbook.create_sheet("hidden")
    hidden.sheet_state = "hidden"
    hidden["Z900"] = value
    workbook.create_sheet("Ark3")
    workbook.save(tmp_path / "n.xlsx")
    raw = read_extract(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert raw.to_pylist() == NPR_ROWS
    assert _notes(raw) == [NOT_READ.format(2)]


def test_a_value_on_another_sheet_behind_a_stale_dimension_is_found(tmp_path: Path) -> None:
    workbook = _npr_workbook()
    workbook.create_sheet("notes")["D40"] = SENTINEL
    workbook.save(tmp_path / "n.xlsx")
    _rewrite_dimension(tmp_path / "n.xlsx", "xl/worksheets/sheet2.xml", "A1")
    raw = read_extract(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert raw.to_pylist() == NPR_ROWS
    assert _notes(raw) == [NOT_READ.format(2)]


def test_a_note_on_another_sheet_never_holds_its_values(tmp_path: Path) -> None:
    # The cells of the other sheets are never quoted, nor their titles (free text: a patient's
    # name, an identity number); the report and its renderings neither.
    workbook = _npr_workbook()
    workbook.create_sheet("Kari Nordmann")["A1"] = SENTINEL
    workbook.create_sheet("Ark3")
    workbook.create_sheet("010190 00083")["C3"] = SENTINEL
    workbook.save(tmp_path / "n.xlsx")
    raw = read_extract(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert raw.to_pylist() == NPR_ROWS
    result = validate_extract(raw, Form.NPR_COUNTS, known_providers=NPR_PROVIDERS, today=TODAY)
    assert result.notes == [NOT_READ.format(2), NOT_READ.format(4)]
    report = result.to_report()
    assert report["notes"] == result.notes
    text = render_text(report)
    page = render_html(report)
    assert f"  note: {NOT_READ.format(4)}\n" in text
    assert f"<li>{NOT_READ.format(4)}</li>" in page
    for shown in (str(raw.schema.metadata), text, page):
        assert SENTINEL not in shown
        assert "010190" not in shown
        assert "Kari" not in shown


@pytest.mark.parametrize("value", ["pasient 01019000083", "010190-00083", 1019000083])
def test_an_identity_number_on_another_sheet_rejects_the_workbook_whole(
    tmp_path: Path, value: object
) -> None:
    # EXTRACT_SPEC.md: "A file in which any value looks like a national identity number ... is
    # rejected whole", whichever sheet holds it (a number cell lost its leading zero).
    workbook = _npr_workbook()
    other = workbook.create_sheet("Koblingsnøkkel")
    other["A1"] = SENTINEL
    other["D900"] = value
    workbook.save(tmp_path / "n.xlsx")
    with pytest.raises(PrivacyViolation) as refused:
        read_extract(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert refused.value.detail == (
        "Sheet 2 of the workbook holds 1 value(s) that look like national identity numbers; the "
        "file is rejected whole"
    )


def test_a_workbook_read_without_a_note_where_the_other_sheets_are_empty(tmp_path: Path) -> None:
    workbook = _npr_workbook()
    workbook.create_sheet("Ark2")["A1"] = " "
    workbook.save(tmp_path / "n.xlsx")
    raw = read_extract(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert raw.schema.metadata is None
    assert _notes(raw) == []
    assert (
        render_text(
            validate_extract(
                raw, Form.NPR_COUNTS, known_providers=NPR_PROVIDERS, today=TODAY
            ).to_report()
        ).count("note:")
        == 0
    )


@pytest.mark.parametrize(
    ("first", "refusal"),
    [
        (
            [["Eksport fra DIPS"]],
            "The first row is not a header of form 'npr_counts' (too few of its cells are column "
            "names): was the header row left out? Its cells are not shown, as they may be a "
            "record's values",
        ),
        (
            [["provider_orgnr", "year", "episodes"]],
            "The extract file of form 'npr_counts' has no data rows",
        ),
    ],
)
def test_a_refused_first_sheet_says_which_other_sheet_holds_data(
    tmp_path: Path, first: list[list[str]], refusal: str
) -> None:
    # A cover sheet or an empty template first, the extract behind it: the refusal says where
    # data was left unread.
    workbook = openpyxl.Workbook()
    cover = workbook.active
    assert cover is not None
    cover.title = "Forside"
    for row in first:
        cover.append(row)
    data = workbook.create_sheet("Data")
    data.append(["provider_orgnr", "year", "episodes"])
    data.append([SENTINEL, 2021, 12])
    workbook.save(tmp_path / "n.xlsx")
    message = rejected(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert message == refusal + ". " + NOT_READ.format(2)


def _rewrite_dimension(path: Path, member: str, ref: str) -> None:
    """Set the `<dimension>` of one sheet, as a tool that leaves it stale writes it."""
    with zipfile.ZipFile(path) as source:
        items = [(item, source.read(item.filename)) for item in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for item, data in items:
            if item.filename == member:
                data, count = re.subn(
                    rb'<dimension ref="[^"]*"\s*/>', f'<dimension ref="{ref}"/>'.encode(), data
                )
                assert count == 1
            target.writestr(item, data)


# --- encoding: valid UTF-8 is UTF-8 ---------------------------------------------------------------


@pytest.mark.parametrize(
    "units",
    [
        ["Tønsberg ≥18 år"],
        ["Tønsberg", "Łódź"],
        ["Voksne ≥18"],
        ["Studie-α"],
        ["Avd ✓"],
        ["Wrocław", "Kraków"],
        ["Ærø", "Ş"],
        ["½ dose → 0,5 mg ± 10 %"],
    ],
)
def test_valid_utf8_is_read_as_utf8(tmp_path: Path, units: list[str]) -> None:
    rows = [basis_row(record_id=f"r{i}", unit_code=unit) for i, unit in enumerate(units)]
    raw = read_extract(write(tmp_path, "b.csv", csv_text(rows)), Form.BASIS)
    assert raw.column("unit_code").to_pylist() == units


def test_utf8_sign_beside_cp1252_letters_is_refused_as_mixed(tmp_path: Path) -> None:
    # UTF-8 '≥' in a Windows-1252 file: read as Windows-1252 it would be stored as 'â‰¥'.
    rows = [basis_row(unit_code="Blåbær"), basis_row(record_id="r2", unit_code="X")]
    data = csv_text(rows).encode("cp1252").replace(b"X", "≥18".encode())
    message = rejected(write(tmp_path, "b.csv", data))
    assert message == (
        "Mixed or undecodable encoding: UTF-8 and other bytes mixed (first bad byte on line 2); "
        "send UTF-8 or Windows-1252"
    )


_WIDE = (
    "abcXYZ019 .-/æøåÆØÅéáüöÄ–—‘’“”\xa0°€…•«»"  # Norwegian text and its signs
    "ŁłŚśŹźŻżĄąĘęĆćŃńŐőŰűŠšŽžČčĐđŋŦŧ"  # Latin Extended-A: Polish, Hungarian, Sami
    "αβγΔΩπµЖжНина"  # Greek, Cyrillic
    "≥≤±×÷→←✓✗½™©®§¶"  # signs
)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=_WIDE, min_size=1, max_size=40))
def test_utf8_without_a_cp1252_accident_reads_as_itself(text: str) -> None:
    encoded = text.encode("utf-8")
    assume(not any(character.encode() in etl.read.CP1252_ACCIDENTS for character in text))
    data = b"record_id;unit_code\r\nr1;" + encoded + b"\r\n"
    assert etl.read._decode(data) == data


# --- XLSX: a stale <dimension> tag loses no row ---------------------------------------------------


@pytest.mark.parametrize("ref", ["A1:C2", "A1", "B2:B2"])
def test_a_stale_dimension_tag_loses_no_row(tmp_path: Path, ref: str) -> None:
    workbook = _npr_workbook()
    sheet = workbook.active
    assert sheet is not None
    for year in range(2010, 2015):
        sheet.append(["983974880", year, year - 2000])
    workbook.save(tmp_path / "n.xlsx")
    _rewrite_dimension(tmp_path / "n.xlsx", "xl/worksheets/sheet1.xml", ref)
    raw = read_extract(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert raw.column_names == ["provider_orgnr", "year", "episodes"]
    assert raw.column("year").to_pylist() == ["2021", "2022", *map(str, range(2010, 2015))]
    assert raw.column("episodes").to_pylist() == ["12", "3", *map(str, range(10, 15))]


def test_values_beyond_the_header_behind_a_stale_dimension_are_found(tmp_path: Path) -> None:
    workbook = _npr_workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet["E9"] = SENTINEL
    workbook.save(tmp_path / "n.xlsx")
    _rewrite_dimension(tmp_path / "n.xlsx", "xl/worksheets/sheet1.xml", "A1:C3")
    message = rejected(tmp_path / "n.xlsx", Form.NPR_COUNTS)
    assert message == "Row 9 of the workbook has values beyond the header's 3 columns"


# --- Parquet: NaN is a missing number ------------------------------------------------------------


@pytest.mark.parametrize("kind", [pa.float64(), pa.float32()])
def test_a_parquet_nan_is_missing(tmp_path: Path, kind: pa.DataType) -> None:
    columns = {name: [value, value] for name, value in basis_row().items()}
    columns["record_id"] = ["r1", "r2"]
    audit = pa.array([12.0, float("nan")], kind)
    pq.write_table(pa.table(columns).set_column(13, "audit", audit), tmp_path / "b.parquet")
    raw = read_extract(tmp_path / "b.parquet", Form.BASIS)
    assert raw.column("audit").to_pylist() == ["12", None]
    typed = normalise(raw, Form.BASIS)
    assert typed.table.column("audit").to_pylist() == [12, None]
    assert typed.invalid["audit"].to_pylist() == [False, False]


def test_a_pandas_float_column_with_a_gap_loads_as_missing(tmp_path: Path) -> None:
    # The same gap written by pandas (which stores it as null): both writers read alike.
    import pandas as pd

    frame = pd.DataFrame([basis_row(), basis_row(record_id="r2")])
    frame["audit"] = [12, None]  # float64 with NaN: pandas types an integer column with a gap so
    frame["age"] = frame["age"].astype(int)
    frame.to_parquet(tmp_path / "b.parquet")
    raw = read_extract(tmp_path / "b.parquet", Form.BASIS)
    assert raw.column("audit").to_pylist() == ["12", None]
    assert raw.column("age").to_pylist() == ["35", "35"]


def test_a_parquet_infinity_or_huge_float_fails_its_row_not_the_file(tmp_path: Path) -> None:
    values = [12.0, float("inf"), float("-inf"), 1e20, 2.5]
    columns = {name: [value] * len(values) for name, value in basis_row().items()}
    columns["record_id"] = [f"r{i}" for i in range(len(values))]
    table = pa.table(columns).set_column(13, "audit", pa.array(values, pa.float64()))
    pq.write_table(table, tmp_path / "b.parquet")
    raw = read_extract(tmp_path / "b.parquet", Form.BASIS)
    assert raw.column("audit").to_pylist() == ["12", "inf", "-inf", "1e+20", "2.5"]
    typed = normalise(raw, Form.BASIS)
    assert typed.invalid["audit"].to_pylist() == [False, True, True, True, True]
