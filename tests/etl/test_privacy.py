"""etl.privacy: identity-number detection against an independent reference, the guard, re-keying."""

import hashlib
import hmac
import re
import unicodedata
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl import privacy
from etl.privacy import NUMERIC_SOURCE, find_identity_numbers, guard, is_identity_number, rekey
from schemas.errors import PrivacyViolation, RejectedInput


def reference_valid(number: str) -> bool:
    """Written apart from etl.privacy: the two mod-11 check digits of a fødselsnummer."""
    digits = [int(c) for c in number]
    s1 = sum(a * b for a, b in zip([3, 7, 6, 1, 8, 9, 4, 5, 2], digits[:9], strict=True))
    k1 = (11 - s1 % 11) % 11
    s2 = sum(a * b for a, b in zip([5, 4, 3, 2, 7, 6, 5, 4, 3, 2], digits[:10], strict=True))
    k2 = (11 - s2 % 11) % 11
    return k1 != 10 and k2 != 10 and digits[9] == k1 and digits[10] == k2


def complete(first_nine: str) -> str | None:
    """The identity number with these nine first digits, or None where k1 or k2 would be 10."""
    w1 = [3, 7, 6, 1, 8, 9, 4, 5, 2]
    k1 = (11 - sum(a * int(b) for a, b in zip(w1, first_nine, strict=True)) % 11) % 11
    if k1 == 10:
        return None
    ten = first_nine + str(k1)
    w2 = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2]
    k2 = (11 - sum(a * int(b) for a, b in zip(w2, ten, strict=True)) % 11) % 11
    return None if k2 == 10 else ten + str(k2)


nine_digits = st.text(alphabet="0123456789", min_size=9, max_size=9)
eleven_digits = st.text(alphabet="0123456789", min_size=11, max_size=11)


def test_hand_worked_identity_number() -> None:
    # 010107 501 ??: k1 sum = 0*3+1*7+0*6+1*1+0*8+7*9+5*4+0*5+1*2 = 93; 93 mod 11 = 5; k1 = 6.
    # k2 sum = 0*5+1*4+0*3+1*2+0*7+7*6+5*5+0*4+1*3+6*2 = 88; 88 mod 11 = 0; 11 → k2 = 0.
    assert is_identity_number("01010750160")
    assert not is_identity_number("01010750161")
    assert not is_identity_number("01010750170")
    assert not is_identity_number("0101075016")
    assert not is_identity_number("010107501600")
    assert not is_identity_number("0101075016x")
    # Non-ASCII digits (Arabic-Indic) are not digits of an identity number.
    assert not is_identity_number("٠١٠١٠٧٥٠١٦٠")


@given(nine_digits)
def test_a_constructed_identity_number_is_always_found(first_nine: str) -> None:
    number = complete(first_nine)
    if number is None:
        return
    assert is_identity_number(number)
    table = pa.table({"a": [number, "x"], "b": [f"fnr:{number}.", None], "c": ["1" + number, "x"]})
    assert find_identity_numbers(table) == {"a": 1, "b": 1}


@given(eleven_digits)
def test_random_eleven_digits_found_iff_both_check_digits_hold(number: str) -> None:
    expected = reference_valid(number)
    assert is_identity_number(number) is expected
    found = find_identity_numbers(pa.table({"v": [number, f"a {number} b"]}))
    assert found == ({"v": 2} if expected else {})


def test_counts_cells_not_occurrences() -> None:
    table = pa.table(
        {
            "note": ["01010750160 og 01010750160", "tlf 12345678901", "01010750160", None],
            "age": ["35", "40", "", "01010750160-1"],
        }
    )
    assert find_identity_numbers(table) == {"note": 2, "age": 1}


def test_guard_names_column_and_count_never_the_value() -> None:
    table = pa.table({"record_id": ["r1", "r2"], "unit_code": ["01010750160", "x 01010750160"]})
    with pytest.raises(PrivacyViolation) as caught:
        guard(table)
    message = str(caught.value)
    assert "01010750160" not in message
    assert "column 'unit_code' (2)" in message
    assert "record_id" not in message
    assert isinstance(caught.value, RejectedInput)
    guard(pa.table({"record_id": ["12345678901", "010107501600"]}))  # invalid / 12 digits pass


def test_rekey_rfc4231_test_case_2() -> None:
    keys = rekey(pa.array(["what do ya want for nothing?", None]), b"Jefe")
    assert keys.to_pylist() == [
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        None,
    ]


def test_rekey_matches_stdlib_and_depends_on_the_key() -> None:
    values = ["P-0001", "Pasient Øst", "P-0001"]
    keys = rekey(pa.chunked_array([values[:1], values[1:]]), b"k" * 32)
    expected = [hmac.new(b"k" * 32, v.encode(), hashlib.sha256).hexdigest() for v in values]
    assert keys.type == pa.string()
    assert keys.to_pylist() == expected
    assert keys[0] == keys[2]
    assert rekey(pa.array(["P-0001"]), b"other")[0] != keys[0]
    with pytest.raises(ValueError, match="must not be empty"):
        rekey(pa.array(["P-0001"]), b"")


# Space, tab, full stop, hyphen-minus, the hyphens and dashes U+2010-U+2014 and the minus sign.
SEPARATORS = " \t.-\u2010\u2011\u2012\u2013\u2014\u2212"


def reference_dated(six: str) -> bool:
    """DDMMYY: day 1-31 or 41-71 (D-number), month 1-12, 41-52 (H-number) or 81-92 (synthetic)."""
    day, month = int(six[:2]), int(six[2:4])
    return day in {*range(1, 32), *range(41, 72)} and month in {
        *range(1, 13),
        *range(41, 53),
        *range(81, 93),
    }


def reference_holds(cell: str) -> bool:
    """Whether a cell holds an identity number, found with the standard library only: a maximal
    run of 11 ASCII digits, or a maximal run of 6 (a plausible birth date) and one of 5 with one
    to three separators (`SEPARATORS`) between them, whose digits pass both check digits; in the
    cell or in its NFKC form."""
    for text in (cell, unicodedata.normalize("NFKC", cell)):
        runs = [(m.start(), m.end(), m.group()) for m in re.finditer(r"[0-9]+", text)]
        for i, (_, end, digits) in enumerate(runs):
            if len(digits) == 11 and reference_valid(digits):
                return True
            if len(digits) == 6 and i + 1 < len(runs) and 1 <= runs[i + 1][0] - end <= 3:
                tail, between = runs[i + 1][2], text[end : runs[i + 1][0]]
                separated = all(c in SEPARATORS for c in between)
                if (
                    separated
                    and len(tail) == 5
                    and reference_valid(digits + tail)
                    and reference_dated(digits)
                ):
                    return True
    return False


def reference_count(cells: list[str | None]) -> int:
    """Cells that `reference_holds` an identity number."""
    return sum(reference_holds(cell) for cell in cells if cell is not None)


cells = st.one_of(
    st.none(),
    st.text(alphabet="0123456789 -.x", max_size=30),
    st.builds(lambda first, before, after: before + (complete(first) or "") + after,
              nine_digits, st.text(alphabet="0123456789 x", max_size=3),
              st.text(alphabet="0123456789 x", max_size=3)),
)  # fmt: skip


@given(st.lists(cells, max_size=20), st.integers(min_value=1, max_value=5))
def test_column_counts_agree_with_a_cell_by_cell_reference(
    values: list[str | None], chunks: int
) -> None:
    # Chunked columns, short and long cells: the length and regex prefilters must not skip any.
    size = max(1, -(-len(values) // chunks))
    parts = [values[i : i + size] for i in range(0, len(values), size)] or [[]]
    table = pa.table({"v": pa.chunked_array(parts, pa.string())})
    expected = reference_count(values)
    assert find_identity_numbers(table) == ({"v": expected} if expected else {})


def test_short_columns_are_skipped_but_long_cells_and_non_text_columns_are_seen() -> None:
    table = pa.table(
        {
            "intake_date": ["01.01.2021", None],  # every cell < 11 bytes: no 11 digits possible
            # 10 digits in an integer column: 1010750160 is 01010750160 (valid) without its zero.
            "audit": pa.array([1010750160, 1234567891], pa.int64()),
            "age": pa.array([35, 15059012387], pa.int64()),  # a number column can hold one
            "note": ["x" * 40, "kort 01010750160"],
        }
    )
    assert find_identity_numbers(table) == {"audit": 1, "age": 1, "note": 1}


def test_rekey_rfc4231_test_case_6_key_longer_than_a_block() -> None:
    keys = rekey(
        pa.array(["Test Using Larger Than Block-Size Key - Hash Key First"]), b"\xaa" * 131
    )
    assert keys.to_pylist() == ["60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"]


@given(st.binary(min_size=1, max_size=200), st.lists(st.one_of(st.none(), st.text(max_size=20))))
def test_rekey_agrees_with_stdlib_hmac_for_any_key_and_text(
    key: bytes, values: list[str | None]
) -> None:
    expected = [
        None if v is None else hmac.new(key, v.encode(), hashlib.sha256).hexdigest() for v in values
    ]
    assert rekey(pa.array(values, pa.string()), key).to_pylist() == expected


def test_numeric_columns_get_back_the_leading_zero() -> None:
    # 01019000083 is valid (see tests/etl/test_read.py); as a number it is 1019000083.
    marked = pa.field("record_id", pa.string(), metadata=NUMERIC_SOURCE)
    ten = ["1019000083", "1019000084", "x"]
    table = pa.table(
        [pa.array(ten), pa.array(ten)], schema=pa.schema([marked, ("unit_code", pa.string())])
    )
    assert find_identity_numbers(table) == {"record_id": 1}
    # An integer column is numeric by its type.
    assert find_identity_numbers(pa.table({"n": pa.array([1019000083, 5], pa.int64())})) == {"n": 1}


def test_a_numeric_id_given_back_its_zero_must_begin_with_a_birth_date() -> None:
    # Of the ids 1000000001-1000001000 these eight pass both check digits with a zero in front
    # (worked out with `is_identity_number`), but "0100000..." is day 01 of month 00: no birth
    # date. A Parquet record_id column of such ids was refused whole.
    passing = [1000000120, 1000000201, 1000000392, 1000000473, 1000000554]
    passing += [1000000635, 1000000716, 1000000988]
    assert all(privacy.is_identity_number(f"0{n}") for n in passing)
    ids = pa.table({"record_id": pa.array(range(1000000001, 1000001001), pa.int64())})
    assert find_identity_numbers(ids) == {}


@given(st.lists(st.integers(1_000_000_000, 9_999_999_999), min_size=1, max_size=30))
def test_a_numeric_ten_digit_cell_is_a_number_exactly_when_its_padded_form_is(
    numbers: list[int],
) -> None:
    def expected(number: int) -> bool:
        # Written out: 11 digits with both check digits, day 01-31 (D-number 41-71), month
        # 01-12 (H-number 41-52, synthetic 81-92).
        padded = f"0{number}"
        day, month = int(padded[:2]), int(padded[2:4])
        return (
            privacy.is_identity_number(padded)
            and (1 <= day <= 31 or 41 <= day <= 71)
            and (1 <= month <= 12 or 41 <= month <= 52 or 81 <= month <= 92)
        )

    count = sum(expected(n) for n in numbers)
    found = find_identity_numbers(pa.table({"n": pa.array(numbers, pa.int64())}))
    assert found == ({"n": count} if count else {})


def test_a_file_name_holding_an_identity_number_is_withheld() -> None:
    # 01010750160 is the hand-worked valid number of this module's first test.
    assert "01010750160" not in privacy.safe_filename("pasient_01010750160.csv")
    assert privacy.safe_filename("basis_2024-10.csv") == "basis_2024-10.csv"
    # Eleven digits that fail the check digits are an ordinary name.
    assert privacy.safe_filename("basis_01010750161.csv") == "basis_01010750161.csv"


@pytest.mark.parametrize("child_process", [False, True])
def test_rekey_in_a_child_process_or_not_gives_the_stdlib_keys(child_process: bool) -> None:
    # Chunked and sliced input (Arrow offsets that do not start at 0), nulls, empty and long values.
    values = ["P-0001", None, "Pasient Øst", "", "x" * 300, "P-0001"]
    array = pa.chunked_array([["skipped", *values[:2]], values[2:]]).combine_chunks().slice(1)
    keys = rekey(array, b"k" * 32, child_process=child_process)
    expected = [
        None if v is None else hmac.new(b"k" * 32, v.encode(), hashlib.sha256).hexdigest()
        for v in values
    ]
    assert keys.type == pa.string()
    assert keys.to_pylist() == expected
    assert rekey(pa.array([], pa.string()), b"k", child_process=child_process).to_pylist() == []


def test_a_failed_rekeying_child_is_an_error_that_names_no_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(privacy.sys, "executable", "/bin/false")
    with pytest.raises(RuntimeError) as caught:
        rekey(pa.array(["P-secret-0001"]), b"k" * 32, child_process=True)
    assert str(caught.value) == "The re-keying process failed (exit status 1, 0 of 32 bytes)"


def test_rekey_uses_the_child_process_from_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = privacy._child_digests

    def counting(key: bytes, offsets: Any, data: memoryview, count: int) -> bytes:
        calls.append(count)
        return real(key, offsets, data, count)

    monkeypatch.setattr(privacy, "_child_digests", counting)
    monkeypatch.setattr(privacy, "CHILD_PROCESS_FROM", 3)
    rekey(pa.array(["a", "b"]), b"k")
    assert calls == []
    keys = rekey(pa.array(["a", "b", "c"]), b"k")
    assert calls == [3]
    assert keys[2].as_py() == hmac.new(b"k", b"c", hashlib.sha256).hexdigest()


@settings(max_examples=15, deadline=None)  # a child process per example
@given(st.binary(min_size=1, max_size=200), st.lists(st.one_of(st.none(), st.text(max_size=20))))
def test_rekey_in_a_child_process_agrees_with_stdlib_hmac(
    key: bytes, values: list[str | None]
) -> None:
    expected = [
        None if v is None else hmac.new(key, v.encode(), hashlib.sha256).hexdigest() for v in values
    ]
    assert rekey(pa.array(values, pa.string()), key, child_process=True).to_pylist() == expected


def test_the_rekeying_child_gets_the_key_on_stdin_only(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, dict[str, Any]]] = []
    real = privacy.subprocess.run

    def spy(args: Any, **kwargs: Any) -> Any:
        seen.append((args, kwargs))
        return real(args, **kwargs)

    monkeypatch.setattr(privacy.subprocess, "run", spy)
    monkeypatch.setenv("KVARUS_PSEUDONYM_KEY", "k" * 32)
    rekey(pa.array(["P-secret-0001"]), b"k" * 32, child_process=True)
    ((args, kwargs),) = seen
    assert kwargs["env"] == {}
    assert not any("k" * 32 in str(arg) or "P-secret" in str(arg) for arg in args)
    assert b"k" * 32 in kwargs["input"]
    assert b"P-secret-0001" in kwargs["input"]


def test_a_rekeying_child_that_answers_short_or_late_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(privacy.sys, "executable", "/bin/true")  # exit 0, no answer
    with pytest.raises(RuntimeError) as short:
        rekey(pa.array(["P-secret-0001", "b"]), b"k" * 32, child_process=True)
    assert str(short.value) == "The re-keying process failed (exit status 0, 0 of 64 bytes)"
    monkeypatch.undo()
    monkeypatch.setattr(privacy, "_child_timeout", lambda count: 0.001)
    with pytest.raises(RuntimeError, match=r"did not finish in 0 s") as late:
        rekey(pa.array(["P-secret-0001"]), b"k" * 32, child_process=True)
    assert "P-secret" not in str(late.value)


def test_too_many_values_at_once_are_refused_before_any_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(privacy, "MAX_VALUES", 2)
    with pytest.raises(ValueError, match="Over 2 distinct pseudonyms at once: split the file"):
        rekey(pa.array(["a", "b", "c"]), b"k")
    assert rekey(pa.array(["a", "b"]), b"k").to_pylist() == [
        hmac.new(b"k", v, hashlib.sha256).hexdigest() for v in (b"a", b"b")
    ]
