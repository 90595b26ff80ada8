"""The identity-number guard finds the written forms: "DDMMYY NNNNN" with up to three spaces, dots,
hyphens or dashes after the sixth digit, and full-width digits, whole or inside text; never a wrong
split."""

from datetime import date

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session

from etl.load import load_file
from etl.privacy import (
    find_identity_numbers,
    guard,
    holds_identity_number,
    is_identity_number,
    safe_filename,
)
from etl.warehouse import Warehouse
from schemas.errors import PrivacyViolation
from schemas.forms import Form
from schemas.organisations import Hierarchy
from tests.conftest import ExtractWriter, episode_row
from tests.etl.test_privacy import complete, nine_digits, reference_count, reference_holds

# 010190 000 8 3, worked by hand with the official weights:
# k1 = 11 - (0*3 + 1*7 + 0*6 + 1*1 + 9*8 + 0*9 + 0*4 + 0*5 + 0*2) mod 11
#    = 11 - 80 mod 11 = 11 - 3 = 8
# k2 = 11 - (0*5 + 1*4 + 0*3 + 1*2 + 9*7 + 0*6 + 0*5 + 0*4 + 0*3 + 8*2) mod 11
#    = 11 - 85 mod 11 = 11 - 8 = 3
VALID = "01019000083"
# The same nine digits with a wrong second check digit (4, not 3).
INVALID = "01019000084"


def full_width(text: str) -> str:
    """ASCII digits as full-width digits (U+FF10-U+FF19), the rest unchanged."""
    return "".join(chr(0xFF10 + int(c)) if c.isascii() and c.isdigit() else c for c in text)


def test_the_hand_worked_numbers() -> None:
    assert is_identity_number(VALID)
    assert not is_identity_number(INVALID)


@pytest.mark.parametrize(
    "cell",
    [
        "010190 00083",
        "010190-00083",
        "010190.00083",
        "010190\u00a000083",  # a no-break space (NFKC: a space), as word processors write it
        "010190\u2009" + "00083",  # a thin space
        "010190\uff0d00083",  # a full-width hyphen-minus
        "010190\u201300083",  # an en dash, as spreadsheets autocorrect a hyphen
        "010190\u201100083",  # a non-breaking hyphen (NFKC: U+2010, not a hyphen-minus)
        "010190\u221200083",  # a minus sign
        "010190\t00083",  # a tab: two spreadsheet cells copied together
        "010190  00083",  # two spaces
        "010190 - 00083",
        full_width("010190") + "\uff0e" + full_width("00083"),  # a full-width full stop
        full_width("01019000083"),
        full_width("010190-00083"),
        full_width("010190") + "\u3000" + full_width("00083"),  # ideographic space
        "fnr 010190-00083.",
        "(010190 00083)",
        "Pasient Øst, 010190.00083",
        "Øst 01019000083²",  # a superscript digit is no digit of the run as written
        # Other scripts' digits, and invisible characters pasted in (they passed before):
        "".join(chr(0x1D7CE + int(c)) for c in VALID),  # mathematical bold digits
        "".join(chr(0x0660 + int(c)) for c in VALID),  # Arabic-Indic digits (NFKC keeps them)
        "pasient " + "".join(chr(0x06F0 + int(c)) for c in "010190") + " 00083",  # Persian
        "010190\u200b00083",  # a zero-width space
        "0101\u00ad9000083",  # a soft hyphen
        "\ufeff01019000083",  # a byte order mark
        VALID.translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")),  # superscript digits
        # Default ignorable characters that are marks or letters, not format characters (Cf):
        "010190\u034f00083",  # combining grapheme joiner
        "0101\ufe0f9000083",  # a variation selector
        "pasient 010190\u17b400083",  # a Khmer inherent vowel
        "010190\u316400083",  # Hangul filler (letters, shown as a blank)
        "01\u115f01\uffa09000083",  # Hangul choseong and half-width fillers
        # Blanks that NFKC keeps: a separator, as a space is.
        "010190\u280000083",  # Braille pattern blank
        "fnr 010190\u168000083",  # Ogham space mark
    ],
)
def test_written_forms_are_found(cell: str) -> None:
    table = pa.table({"clinical_study_id": [cell, "x" * 20, None]})
    assert find_identity_numbers(table) == {"clinical_study_id": 1}


@pytest.mark.parametrize(
    "cell",
    [
        "010190 00084",  # wrong check digit
        "0101 9000 083",  # not split after the sixth digit
        "01019 000083",
        "010190 -  00083",  # four separators
        "010190/00083",  # not one of the separators
        "010190_00083",
        "010190 000831",  # twelve digits
        "1010190 00083",
        "0101900 0083",
        "010190 0008",
    ],
)
def test_other_shapes_are_not_found(cell: str) -> None:
    assert find_identity_numbers(pa.table({"v": [cell, "x" * 20]})) == {}


def test_counts_cells_in_every_form_once() -> None:
    table = pa.table(
        {
            "a": ["010190 00083", "010190-00083 og 01019000083", full_width(VALID), "x"],
            "b": ["010190 00084", "ok", None, "kort"],
        }
    )
    assert find_identity_numbers(table) == {"a": 3}


def test_the_guard_names_column_and_count_never_the_value() -> None:
    table = pa.table({"record_id": ["r1", "r2"], "unit_code": ["010190 00083", "010190-00083"]})
    with pytest.raises(PrivacyViolation) as caught:
        guard(table)
    message = str(caught.value)
    assert "column 'unit_code' (2)" in message
    assert "010190" not in message
    assert "00083" not in message
    assert "record_id" not in message


def test_a_file_name_in_a_written_form_is_withheld() -> None:
    for name in ("basis_010190-00083.csv", "basis_010190.00083.csv", full_width(VALID) + ".csv"):
        assert "00083" not in safe_filename(name)
        assert "０００８３" not in safe_filename(name)
    assert safe_filename("basis_010190-00084.csv") == "basis_010190-00084.csv"


@pytest.mark.parametrize("invisible", ["\u034f", "\ufe0f", "\u3164", "\uffa0", "\u2800"])
def test_free_text_with_an_invisible_character_in_the_number_is_refused(invisible: str) -> None:
    # Release notes, key names, uploaders and file names are checked with `holds_identity_number`
    # and `safe_filename`, which fold as the file check does.
    written = VALID[:6] + invisible + VALID[6:]
    assert holds_identity_number(f"note {written}")
    assert "00083" not in safe_filename(f"rapport_{written}.csv")
    assert not holds_identity_number(f"note {written[:-1]}4")  # wrong check digit


# Nine first digits that begin with a plausible birth date DDMMYY (D- and H-numbers included).
dated_nine = st.builds(
    lambda day, month, rest: f"{day:02d}{month:02d}{rest}",
    st.sampled_from([*range(1, 32), *range(41, 72)]),
    st.sampled_from([*range(1, 13), *range(41, 53), *range(81, 93)]),
    st.text(alphabet="0123456789", min_size=5, max_size=5),
)


def test_a_separated_form_must_begin_with_a_birth_date() -> None:
    """20230100110 passes both check digits (k1 = 11 - (2*3 + 2*6 + 3*1 + 1*9 + 1*2 = 32) mod 11
    = 1; k2 = 11 - (2*5 + 2*3 + 3*2 + 1*6 + 1*3 + 1*2 = 33) mod 11 = 11 → 0), but '202301-00110'
    is a year and month, not DDMMYY (month 23): such an id is not taken for an identity number,
    while the 11 digits unbroken still are (the issue's rule)."""
    assert is_identity_number("20230100110")
    assert find_identity_numbers(pa.table({"v": ["202301-00110", "ref 202301 00110"]})) == {}
    assert find_identity_numbers(pa.table({"v": ["20230100110"]})) == {"v": 1}


@given(
    dated_nine,
    st.sampled_from(["", " ", "-", ".", "\u00a0", "\u2013", "\u2011", " - "]),
    st.booleans(),
    st.text(alphabet="x .-Ø", max_size=3),
    st.text(alphabet="x .-Ø", max_size=3),
)
def test_any_valid_number_in_any_written_form_is_found(
    first_nine: str, separator: str, wide: bool, before: str, after: str
) -> None:
    number = complete(first_nine)
    if number is None:
        return
    written = number[:6] + separator + number[6:]
    if wide:
        written = full_width(written)
    cell = before + written + after
    assert reference_holds(cell)
    assert find_identity_numbers(pa.table({"v": [cell, "x" * 11]})) == {"v": 1}
    # One digit more on either side: no run of 11, no split of 6 and 5, so nothing is found.
    longer = ["1" + written + after, before + written + "1"]
    assert not any(reference_holds(cell) for cell in longer)
    assert find_identity_numbers(pa.table({"v": longer})) == {}


# Characters whose NFKC form the guard looks at (full-width digits and separators, non-ASCII
# spaces) or that NFKC leaves alone: `reference_holds` normalises every cell, the guard only those
# holding such a character, which agree for this alphabet.
ALPHABET = "0123456789 -.x\u00a0\u2009\u3000\uff0d\uff0e\u2011\u2013Ø" + full_width("0123456789")


def _written(first_nine: str, separator: str, wide: bool) -> str:
    number = complete(first_nine) or ""
    written = number[:6] + separator + number[6:]
    return full_width(written) if wide else written


cells = st.one_of(
    st.text(alphabet=ALPHABET, max_size=30),
    st.builds(
        lambda before, written, after: before + written + after,
        st.text(alphabet=ALPHABET, max_size=3),
        st.builds(
            _written,
            nine_digits,
            st.sampled_from(["", " ", "-", ".", "/", "\u2013", " - ", "    "]),
            st.booleans(),
        ),
        st.text(alphabet=ALPHABET, max_size=3),
    ),
)


@given(st.lists(cells, max_size=20))
def test_column_counts_agree_with_the_reference_for_mixed_text(values: list[str]) -> None:
    expected = reference_count(list(values))
    found = find_identity_numbers(pa.table({"v": pa.array(values, pa.string())}))
    assert found == ({"v": expected} if expected else {})


def test_a_basis_file_with_a_written_number_is_rejected_whole(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    rows = [
        episode_row(Form.BASIS, 1, "P1", clinical_study_id="010190 00083"),
        episode_row(Form.BASIS, 2, "P2", unit_code="010190-00083"),
    ]
    upload = load_file(
        write_extract(Form.BASIS, rows), Form.BASIS, warehouse=warehouse, session=session,
        key=key, known_providers=frozenset(o.orgnr for o in Hierarchy.default().providers),
        today=date(2025, 11, 1),
    )  # fmt: skip
    assert upload.status == "rejected"
    assert upload.error is not None
    assert "column 'unit_code' (1)" in upload.error
    assert "column 'clinical_study_id' (1)" in upload.error
    assert "00083" not in upload.error
    assert upload.rows_accepted in (0, None)
    assert not (warehouse.root / "basis").exists() or warehouse.count("basis") == 0
