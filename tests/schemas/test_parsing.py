"""schemas.parsing: dates and integers against independent pure-Python references."""

import re
from datetime import date, datetime

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.errors import RejectedInput
from schemas.forms import Form, extract_schema
from schemas.parsing import normalise, parse_dates, parse_integers


def reference_date(text: str) -> date | None:
    """datetime.strptime behind a strict shape guard (strptime alone accepts '1.2.2021')."""
    for shape, fmt in (
        (r"[0-9]{2}\.[0-9]{2}\.[0-9]{4}", "%d.%m.%Y"),
        (r"[0-9]{4}-[0-9]{2}-[0-9]{2}", "%Y-%m-%d"),
    ):
        if re.fullmatch(shape, text):
            try:
                return datetime.strptime(text, fmt).date()
            except ValueError:
                return None
    return None


def reference_int(text: str) -> int | None:
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    value = int(text)
    return value if -(2**31) <= value < 2**31 else None


def test_dates_by_hand() -> None:
    values = pa.array(
        [
            "01.03.2021",
            "2021-03-01",
            "31.02.2021",
            "29.02.2020",
            "29.02.2021",
            "1.3.2021",
            "2021-3-1",
            "2021-03-01T00:00",
            "01/03/2021",
            "0000-01-01",
            None,
        ]
    )
    dates, invalid = parse_dates(values)
    assert dates.type == pa.date32()
    assert dates.to_pylist() == [
        date(2021, 3, 1),
        date(2021, 3, 1),
        None,
        date(2020, 2, 29),
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ]
    assert invalid.to_pylist() == [
        False,
        False,
        True,
        False,
        True,
        True,
        True,
        True,
        True,
        True,
        False,
    ]


def test_integers_by_hand() -> None:
    values = pa.array(
        [
            "35",
            "+7",
            "-3",
            "007",
            "1.0",
            "1 000",
            "abc",
            "1e3",
            "",
            "2147483648",
            "-2147483648",
            "0000000000000000000042",
            "٣",
            None,
        ]
    )
    integers, invalid = parse_integers(values)
    assert integers.type == pa.int32()
    assert integers.to_pylist() == [
        35,
        7,
        -3,
        7,
        None,
        None,
        None,
        None,
        None,
        None,
        -(2**31),
        42,
        None,
        None,
    ]
    assert invalid.to_pylist() == [False] * 4 + [True] * 6 + [False, False, True, False]


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)), st.booleans())
def test_any_date_either_format_parses_back_to_itself(day: date, norwegian: bool) -> None:
    text = day.strftime("%d.%m.%Y") if norwegian else day.isoformat()
    dates, invalid = parse_dates(pa.array([text]))
    assert dates.to_pylist() == [day]
    assert invalid.to_pylist() == [False]


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1), st.sampled_from(["", "+", "0"]))
def test_any_int32_formatted_parses(value: int, prefix: str) -> None:
    text = str(value) if value < 0 else prefix + str(value)
    integers, invalid = parse_integers(pa.array([text]))
    assert integers.to_pylist() == [value]
    assert invalid.to_pylist() == [False]


date_like = st.text(alphabet="0123456789.-", max_size=12) | st.text(max_size=12)


@given(st.lists(date_like, min_size=1, max_size=20))
def test_random_text_as_date_agrees_with_strptime(texts: list[str]) -> None:
    dates, invalid = parse_dates(pa.array(texts, pa.string()))
    expected = [reference_date(t) for t in texts]
    assert dates.to_pylist() == expected
    assert invalid.to_pylist() == [e is None for e in expected]


int_like = st.text(alphabet="0123456789+- .e", max_size=14) | st.text(max_size=8)


@given(st.lists(int_like, min_size=1, max_size=20))
def test_random_text_as_integer_agrees_with_int(texts: list[str]) -> None:
    integers, invalid = parse_integers(pa.array(texts, pa.string()))
    expected = [reference_int(t) for t in texts]
    assert integers.to_pylist() == expected
    assert invalid.to_pylist() == [e is None for e in expected]


def test_normalise_types_a_form_and_marks_invalid_values() -> None:
    raw = pa.table(
        {
            "year": ["2021", "20x1", None],
            "provider_orgnr": ["983974880", "98397488O", None],
            "episodes": ["12", "", "1.5"],
        }
    )
    result = normalise(raw, Form.NPR_COUNTS)
    assert result.table.schema == extract_schema(Form.NPR_COUNTS)
    assert result.table.to_pylist() == [
        {"provider_orgnr": "983974880", "year": 2021, "episodes": 12},
        {"provider_orgnr": "98397488O", "year": None, "episodes": None},
        {"provider_orgnr": None, "year": None, "episodes": None},
    ]
    assert {name: array.to_pylist() for name, array in result.invalid.items()} == {
        "provider_orgnr": [False, False, False],
        "year": [False, True, False],
        "episodes": [False, True, True],
    }


def test_normalise_fills_absent_optional_columns_and_refuses_unknown_ones() -> None:
    raw = pa.table(
        {
            "record_id": ["o1"],
            "patient_pseudonym": ["p"],
            "provider_orgnr": ["1"],
            "optout_date": ["17.05.2023"],
        }
    )
    assert normalise(raw, Form.OPTOUT).table.column("optout_date").to_pylist() == [
        date(2023, 5, 17)
    ]
    measurement = normalise(pa.table({"record_id": ["m1"]}), Form.MEASUREMENT)
    assert measurement.table.column("benefit").to_pylist() == [None]
    assert measurement.invalid["benefit"].to_pylist() == [False]
    with pytest.raises(RejectedInput, match="not part of form 'optout': fnr"):
        normalise(raw.append_column("fnr", pa.array(["secret"])), Form.OPTOUT)
